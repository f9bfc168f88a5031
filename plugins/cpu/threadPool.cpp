#include "threadPool.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

namespace dat
{
namespace cpu
{
namespace
{

class ThreadPool
{
public:
    explicit ThreadPool(int32_t threads)
    {
        for (int32_t i = 1; i < threads; ++i)
        {
            mWorkers.emplace_back([this] { workerLoop(); });
        }
    }

    ~ThreadPool()
    {
        {
            std::lock_guard<std::mutex> lock(mMutex);
            mStop = true;
        }
        mWake.notify_all();
        for (auto& worker : mWorkers)
        {
            worker.join();
        }
    }

    int32_t size() const
    {
        return static_cast<int32_t>(mWorkers.size()) + 1;
    }

    void run(int64_t chunks, std::function<void(int64_t)> const& chunkBody)
    {
        // One job at a time: concurrent sessions calling in serialise here rather than interleave.
        std::lock_guard<std::mutex> jobLock(mJobMutex);
        {
            std::lock_guard<std::mutex> lock(mMutex);
            mBody = &chunkBody;
            mChunks = chunks;
            mNext.store(0);
            mPending = static_cast<int32_t>(mWorkers.size());
            ++mGeneration;
        }
        mWake.notify_all();
        drain();
        std::unique_lock<std::mutex> lock(mMutex);
        mDone.wait(lock, [this] { return mPending == 0; });
        mBody = nullptr;
    }

private:
    void drain()
    {
        for (int64_t chunk = mNext.fetch_add(1); chunk < mChunks; chunk = mNext.fetch_add(1))
        {
            (*mBody)(chunk);
        }
    }

    void workerLoop()
    {
        uint64_t seen = 0;
        while (true)
        {
            {
                std::unique_lock<std::mutex> lock(mMutex);
                mWake.wait(lock, [&] { return mStop || mGeneration != seen; });
                if (mStop)
                {
                    return;
                }
                seen = mGeneration;
            }
            drain();
            {
                std::lock_guard<std::mutex> lock(mMutex);
                --mPending;
            }
            mDone.notify_one();
        }
    }

    std::vector<std::thread> mWorkers;
    std::mutex mJobMutex;
    std::mutex mMutex;
    std::condition_variable mWake;
    std::condition_variable mDone;
    std::function<void(int64_t)> const* mBody{nullptr};
    int64_t mChunks{0};
    std::atomic<int64_t> mNext{0};
    int32_t mPending{0};
    uint64_t mGeneration{0};
    bool mStop{false};
};

int32_t configuredThreads()
{
    if (char const* env = std::getenv("DAT_NUM_THREADS"))
    {
        int const value = std::atoi(env);
        if (value > 0)
        {
            return value;
        }
    }
    unsigned const hw = std::thread::hardware_concurrency();
    return hw == 0 ? 1 : static_cast<int32_t>(hw);
}

ThreadPool& pool()
{
    static ThreadPool instance(configuredThreads());
    return instance;
}

thread_local ChunkRunner tRunner = nullptr;
thread_local void* tRunnerContext = nullptr;

} // namespace

ScopedChunkRunner::ScopedChunkRunner(ChunkRunner runner, void* context)
    : mSavedRunner(tRunner)
    , mSavedContext(tRunnerContext)
{
    tRunner = runner;
    tRunnerContext = context;
}

ScopedChunkRunner::~ScopedChunkRunner()
{
    tRunner = mSavedRunner;
    tRunnerContext = mSavedContext;
}

int32_t numThreads()
{
    // With a runner the pool size is the runner's business: split work as for our own pool (at least in
    // two, in case the session has more threads than DAT_NUM_THREADS), and never start our own pool.
    return tRunner != nullptr ? std::max<int32_t>(configuredThreads(), 2) : pool().size();
}

void parallelFor(int64_t n, int64_t grain, std::function<void(int64_t, int64_t)> const& body)
{
    if (n <= 0)
    {
        return;
    }
    grain = std::max<int64_t>(grain, 1);
    int32_t const threads = numThreads(); // with a runner, a one-thread session runs the chunks in turn
    if (threads == 1 || n <= grain)
    {
        body(0, n);
        return;
    }
    // A few chunks per thread balances uneven work without much counter traffic.
    int64_t const chunkSize = std::max<int64_t>(grain, (n + 4 * threads - 1) / (4 * threads));
    int64_t const chunks = (n + chunkSize - 1) / chunkSize;
    std::function<void(int64_t)> chunkBody = [&](int64_t chunk) {
        int64_t const begin = chunk * chunkSize;
        body(begin, std::min(n, begin + chunkSize));
    };
    if (tRunner != nullptr)
    {
        tRunner(tRunnerContext, chunks, chunkBody);
        return;
    }
    pool().run(chunks, chunkBody);
}

} // namespace cpu
} // namespace dat
