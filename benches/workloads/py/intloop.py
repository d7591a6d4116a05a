# Integer-heavy interpreter work: a linear congruential generator and bit operations.
x = 1
s = 0
for i in range(1000000):
    x = (x * 1103515245 + 12345) & 0x7fffffff
    s = (s + x % 1000) ^ i
print(s)
