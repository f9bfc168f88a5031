// A small persistent thread pool for the CPU kernels: parallelFor splits [0, n) into chunks that the
// calling thread and the workers take from a shared counter. Thread count: DAT_NUM_THREADS, else
// std::thread::hardware_concurrency().
#pragma once

#include <cstdint>
#include <functional>

namespace dat
{
namespace cpu
{

// Runs body(begin, end) over disjoint chunks covering [0, n); returns when all chunks are done.
// Runs inline when n is small or only one thread is configured.
void parallelFor(int64_t n, int64_t grain, std::function<void(int64_t, int64_t)> const& body);

int32_t numThreads();

} // namespace cpu
} // namespace dat
