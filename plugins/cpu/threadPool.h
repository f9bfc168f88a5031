// A small persistent thread pool for the CPU kernels: parallelFor splits [0, n) into chunks that the
// calling thread and the workers take from a shared counter. Thread count: DAT_NUM_THREADS, else
// std::thread::hardware_concurrency(). Inside onnxruntime the chunks go to the session's own pool
// instead (ScopedChunkRunner).
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

// Runs chunkBody(0 .. chunks-1), possibly concurrently, and returns when all are done.
using ChunkRunner = void (*)(void* context, int64_t chunks, std::function<void(int64_t)> const& chunkBody);

// While alive, parallelFor on this thread hands its chunks to `runner` instead of our pool: inside an
// onnxruntime kernel that is the session's intra-op pool, so the session's thread count holds and its
// spinning workers do not compete with ours for the cores.
class ScopedChunkRunner
{
public:
    ScopedChunkRunner(ChunkRunner runner, void* context);
    ~ScopedChunkRunner();
    ScopedChunkRunner(ScopedChunkRunner const&) = delete;
    ScopedChunkRunner& operator=(ScopedChunkRunner const&) = delete;

private:
    ChunkRunner mSavedRunner;
    void* mSavedContext;
};

// Threads to split work for: our pool's size, or with a ScopedChunkRunner a guess (DAT_NUM_THREADS or the
// cores, at least 2) that starts no pool.
int32_t numThreads();

} // namespace cpu
} // namespace dat
