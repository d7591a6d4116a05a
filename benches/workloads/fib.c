/* Naive recursive Fibonacci for benches/run-vs-wasmtime.sh: integer work that is almost
 * only calls and returns (fib(N) makes about 2 fib(N) calls), the case where per-call
 * costs (detwasm's stack metering, fuel checks at function entry) show most.
 * Usage: fib.wasm N */
#include <stdio.h>
#include <stdlib.h>

__attribute__((noinline)) static unsigned fib(unsigned n) {
    return n < 2 ? n : fib(n - 1) + fib(n - 2);
}

int main(int argc, char **argv) {
    unsigned n = argc > 1 ? (unsigned)atoi(argv[1]) : 30;
    printf("fib(%u)=%u\n", n, fib(n));
    return 0;
}
