/* n-body: the Sun and the four giant planets, integrated with a fixed time step (the
 * workload of the Computer Language Benchmarks Game), for benches/run-vs-wasmtime.sh:
 * float-heavy (multiplies, adds, a divide and a square root per pair and step), with
 * calls in the inner loop, and no I/O but the energy before and after. With 1000 steps
 * it prints -0.169075164 and -0.169087605.
 *
 * Built by the script with clang for wasm32-wasi (wasi-libc): clang --target=wasm32-wasi
 * -O2 nbody.c. Usage: nbody.wasm STEPS */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define PI 3.141592653589793
#define SOLAR_MASS (4.0 * PI * PI)
#define DAYS_PER_YEAR 365.24
#define BODIES 5

struct body {
    double pos[3];
    double vel[3];
    double mass;
};

/* Positions in AU, velocities in AU per day (scaled to per year below), masses in
 * solar masses. */
static struct body system_[BODIES] = {
    {{0, 0, 0}, {0, 0, 0}, 1},
    {{4.84143144246472090e+00, -1.16032004402742839e+00, -1.03622044471123109e-01},
     {1.66007664274403694e-03, 7.69901118419740425e-03, -6.90460016972063023e-05},
     9.54791938424326609e-04},
    {{8.34336671824457987e+00, 4.12479856412430479e+00, -4.03523417114321381e-01},
     {-2.76742510726862411e-03, 4.99852801234917238e-03, 2.30417297573763929e-05},
     2.85885980666130812e-04},
    {{1.28943695621391310e+01, -1.51111514016986312e+01, -2.23307578892655734e-01},
     {2.96460137564761618e-03, 2.37847173959480950e-03, -2.96589568540237556e-05},
     4.36624404335156298e-05},
    {{1.53796971148509165e+01, -2.59193146099879641e+01, 1.79258772950371181e-01},
     {2.68067772490389322e-03, 1.62824170038242295e-03, -9.51592254519715870e-05},
     5.15138902046611451e-05},
};

static void to_units(struct body *b) {
    for (int i = 0; i < BODIES; i++) {
        for (int k = 0; k < 3; k++) b[i].vel[k] *= DAYS_PER_YEAR;
        b[i].mass *= SOLAR_MASS;
    }
}

/* The Sun moves so that the system's total momentum is zero. */
static void zero_momentum(struct body *b) {
    double p[3] = {0, 0, 0};
    for (int i = 0; i < BODIES; i++)
        for (int k = 0; k < 3; k++) p[k] += b[i].vel[k] * b[i].mass;
    for (int k = 0; k < 3; k++) b[0].vel[k] = -p[k] / SOLAR_MASS;
}

static double energy(const struct body *b) {
    double e = 0;
    for (int i = 0; i < BODIES; i++) {
        const struct body *s = &b[i];
        e += 0.5 * s->mass *
             (s->vel[0] * s->vel[0] + s->vel[1] * s->vel[1] + s->vel[2] * s->vel[2]);
        for (int j = i + 1; j < BODIES; j++) {
            double d[3];
            for (int k = 0; k < 3; k++) d[k] = s->pos[k] - b[j].pos[k];
            e -= s->mass * b[j].mass / sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]);
        }
    }
    return e;
}

/* Kept out of line so each step makes calls, as real code does. */
__attribute__((noinline)) static void interact(struct body *a, struct body *c, double dt) {
    double d[3];
    for (int k = 0; k < 3; k++) d[k] = a->pos[k] - c->pos[k];
    double r2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2];
    double mag = dt / (r2 * sqrt(r2));
    for (int k = 0; k < 3; k++) {
        a->vel[k] -= d[k] * c->mass * mag;
        c->vel[k] += d[k] * a->mass * mag;
    }
}

static void step(struct body *b, double dt) {
    for (int i = 0; i < BODIES; i++)
        for (int j = i + 1; j < BODIES; j++) interact(&b[i], &b[j], dt);
    for (int i = 0; i < BODIES; i++)
        for (int k = 0; k < 3; k++) b[i].pos[k] += dt * b[i].vel[k];
}

int main(int argc, char **argv) {
    long steps = argc > 1 ? atol(argv[1]) : 1000;
    to_units(system_);
    zero_momentum(system_);
    printf("%.9f\n", energy(system_));
    for (long n = 0; n < steps; n++) step(system_, 0.01);
    printf("%.9f\n", energy(system_));
    return 0;
}
