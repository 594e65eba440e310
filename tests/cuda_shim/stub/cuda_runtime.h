// Empty: the shim (../fakecuda.h) provides what the kernels use.
