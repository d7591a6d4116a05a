# Float-heavy interpreter work: every result is a new float object stored in the heap.
import math
x = 0.5; y = 0.25; s = 0.0
for i in range(1000000):
    x = x * 1.0000001 + y / (1.0 + s)
    y = math.sqrt(abs(x - y) + 1e-9) * 0.5
    s = s * 0.999 + x * y
print("%.6f" % s)
