// cudaStream_t without the CUDA runtime's headers, so that ops/<op>_cuda.h can be included by
// every build: ops/<op>.cpp names its CUDA backend even where CUDA is off (dispatch() never calls
// it there, core/dispatch.h). The same declaration as the CUDA runtime's (driver_types.h) and
// cuda/emulation.h's, which may come before or after it.
#pragma once

struct CUstream_st;
typedef CUstream_st* cudaStream_t;
