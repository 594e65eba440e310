// Common macros for host/device code and argument checks.
#pragma once

#include <stdexcept>
#include <string>

#if defined(__CUDACC__)
#define OFDB_HD __host__ __device__ __forceinline__
#else
#define OFDB_HD inline
#endif

// Cheap invariant re-checks in C++ (full validation happens once, in Python).
// pybind11 turns std::invalid_argument into ValueError.
#define OFDB_CHECK(cond, msg)                                      \
  do {                                                             \
    if (!(cond)) throw std::invalid_argument(std::string(msg));    \
  } while (0)
