// The CUDA runtime API, or its CPU emulation (VGKERN_CUDA=EMULATE, cuda/emulation.h).
#pragma once
#ifdef VGKERN_CUDA_EMULATE
#include "cuda/emulation.h"
#else
#include <cuda_runtime.h>
#endif
