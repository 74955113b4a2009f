"""Pure conversions between the Open Inference Protocol's wire forms and numpy.

No I/O here, and no per-element Python work on fixed-size data: every function is a numpy or
buffer operation, except where the data itself is per element (BYTES strings).
"""
