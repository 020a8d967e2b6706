// The expert-parallel transports (contract in ep_transport.hpp).
#include "ep_transport.hpp"

#include <dlfcn.h>
#include <nccl.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <set>

#include "device_buffer.hpp"
#include "dsv4/cuda_check.hpp"
#include "dsv4/error.hpp"

namespace dsv4::cuda {
namespace {

std::string device_list(const std::vector<int>& devices) {
  std::string s;
  for (size_t i = 0; i < devices.size(); ++i) s += (i ? "," : "") + std::to_string(devices[i]);
  return s;
}

// A rank that waits longer than this for the others in the host transport gives up: the group is
// aborted and the step fails (a stuck peer becomes an error, never a hang). Every rank runs the
// same work between two exchanges, so this only has to exceed one layer of the largest chunk.
constexpr auto kHostBarrierTimeout = std::chrono::seconds(300);

// ---- host: same-process copies, host barrier -------------------------------------------------
struct HostShared {
  std::mutex mu;
  std::condition_variable cv;
  int arrived = 0;
  uint64_t generation = 0;
  bool aborted = false;
  std::string why;
  std::vector<int> devices;
  std::vector<const float*> send;            // per rank, set before the first barrier
  std::vector<cudaEvent_t> ready, done;      // per rank, on its device

  void fail_if_aborted() const {
    if (aborted) fail(Status::backend, "expert-parallel group aborted: {}", why);
  }
  void abort(const std::string& reason) {
    std::lock_guard<std::mutex> lk(mu);
    if (!aborted) {
      aborted = true;
      why = reason;
    }
    cv.notify_all();
  }
  void barrier(int rank) {
    std::unique_lock<std::mutex> lk(mu);
    fail_if_aborted();
    const uint64_t gen = generation;
    if (++arrived == static_cast<int>(devices.size())) {
      arrived = 0;
      ++generation;
      cv.notify_all();
      return;
    }
    if (!cv.wait_for(lk, kHostBarrierTimeout, [&] { return generation != gen || aborted; })) {
      aborted = true;
      why = fmt::format("rank {} waited {} s for the other ranks at an exchange", rank,
                        std::chrono::duration_cast<std::chrono::seconds>(kHostBarrierTimeout).count());
      cv.notify_all();
    }
    fail_if_aborted();
  }
};

class HostTransport final : public EpTransport {
 public:
  HostTransport(HostShared& sh, int rank) : sh_(sh), rank_(rank) {}
  void all_gather(const float* send, float* recv, size_t n, cudaStream_t stream) override {
    const int W = world();
    sh_.send[static_cast<size_t>(rank_)] = send;
    DSV4_CUDA_CHECK(cudaEventRecord(sh_.ready[static_cast<size_t>(rank_)], stream));
    sh_.barrier(rank_);  // every rank's send is recorded
    const int dev = sh_.devices[static_cast<size_t>(rank_)];
    for (int q = 0; q < W; ++q) {
      const size_t uq = static_cast<size_t>(q);
      if (q != rank_) DSV4_CUDA_CHECK(cudaStreamWaitEvent(stream, sh_.ready[uq], 0));
      DSV4_CUDA_CHECK(cudaMemcpyPeerAsync(recv + uq * n, dev, sh_.send[uq], sh_.devices[uq], n * sizeof(float), stream));
    }
    DSV4_CUDA_CHECK(cudaEventRecord(sh_.done[static_cast<size_t>(rank_)], stream));
    sh_.barrier(rank_);  // every rank's copies are recorded
    // Nothing later on this stream (the next layer rewrites `send`) runs before the others have read it.
    for (int q = 0; q < W; ++q)
      if (q != rank_) DSV4_CUDA_CHECK(cudaStreamWaitEvent(stream, sh_.done[static_cast<size_t>(q)], 0));
  }
  void abort(const std::string& why) override { sh_.abort(fmt::format("rank {}: {}", rank_, why)); }
  int rank() const override { return rank_; }
  int world() const override { return static_cast<int>(sh_.devices.size()); }

 private:
  HostShared& sh_;
  int rank_;
};

class HostGroup final : public EpGroup {
 public:
  explicit HostGroup(const std::vector<int>& devices) {
    sh_.devices = devices;
    sh_.send.assign(devices.size(), nullptr);
    for (size_t r = 0; r < devices.size(); ++r) {
      DSV4_CUDA_CHECK(cudaSetDevice(devices[r]));
      for (auto* v : {&sh_.ready, &sh_.done}) {
        cudaEvent_t e = nullptr;
        DSV4_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
        v->push_back(e);
      }
      ranks_.push_back(std::make_unique<HostTransport>(sh_, static_cast<int>(r)));
    }
  }
  ~HostGroup() override {
    for (size_t r = 0; r < sh_.devices.size(); ++r) {
      (void)cudaSetDevice(sh_.devices[r]);
      if (r < sh_.ready.size()) cudaEventDestroy(sh_.ready[r]);
      if (r < sh_.done.size()) cudaEventDestroy(sh_.done[r]);
    }
  }
  EpTransport& rank(int r) override { return *ranks_.at(static_cast<size_t>(r)); }
  int world() const override { return static_cast<int>(sh_.devices.size()); }
  std::string describe() const override {
    return fmt::format("host copies over devices {}", device_list(sh_.devices));
  }

 private:
  HostShared sh_;
  std::vector<std::unique_ptr<HostTransport>> ranks_;
};

// ---- nccl: loaded at run time ----------------------------------------------------------------
struct NcclApi {
  void* lib = nullptr;
  ncclResult_t (*get_version)(int*) = nullptr;
  ncclResult_t (*comm_init_all)(ncclComm_t*, int, const int*) = nullptr;
  ncclResult_t (*comm_destroy)(ncclComm_t) = nullptr;
  ncclResult_t (*comm_abort)(ncclComm_t) = nullptr;
  ncclResult_t (*all_gather)(const void*, void*, size_t, ncclDataType_t, ncclComm_t, cudaStream_t) = nullptr;
  const char* (*error_string)(ncclResult_t) = nullptr;

  NcclApi() {
    const char* env = std::getenv("DSV4_NCCL_LIBRARY");
    std::string tried;
    for (const char* name : {env, "libnccl.so.2", "libnccl.so"}) {
      if (!name || !*name) continue;
      lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
      if (lib) break;
      tried += fmt::format("\n  {}: {}", name, dlerror());
    }
    if (!lib)
      fail(Status::unsupported, "expert parallelism over NCCL: the NCCL library could not be loaded (set "
                                "DSV4_NCCL_LIBRARY to its path, or use the setting ep_transport=host):{}", tried);
    sym(get_version, "ncclGetVersion");
    sym(comm_init_all, "ncclCommInitAll");
    sym(comm_destroy, "ncclCommDestroy");
    sym(comm_abort, "ncclCommAbort");
    sym(all_gather, "ncclAllGather");
    sym(error_string, "ncclGetErrorString");
  }
  ~NcclApi() {
    if (lib) dlclose(lib);
  }
  NcclApi(const NcclApi&) = delete;
  NcclApi& operator=(const NcclApi&) = delete;
  template <class F> void sym(F& f, const char* name) {
    f = reinterpret_cast<F>(dlsym(lib, name));
    if (!f) fail(Status::unsupported, "expert parallelism over NCCL: the NCCL library lacks {}", name);
  }
  void check(ncclResult_t r, const char* what) const {
    if (r != ncclSuccess) fail(Status::backend, "NCCL {}: {} (error {})", what, error_string(r), static_cast<int>(r));
  }
};

class NcclGroup;

class NcclTransport final : public EpTransport {
 public:
  NcclTransport(NcclGroup& g, int rank) : g_(g), rank_(rank) {}
  void all_gather(const float* send, float* recv, size_t n, cudaStream_t stream) override;
  void abort(const std::string& why) override;
  int rank() const override { return rank_; }
  int world() const override;

 private:
  NcclGroup& g_;
  int rank_;
};

class NcclGroup final : public EpGroup {
 public:
  explicit NcclGroup(const std::vector<int>& devices) : devices_(devices) {
    if (std::set<int>(devices.begin(), devices.end()).size() != devices.size())
      fail(Status::invalid_argument, "expert parallelism over NCCL: devices {} repeat a device (NCCL takes one rank "
                                     "per GPU; ranks sharing a device need ep_transport=host)", device_list(devices));
    // NVLink multicast (NVLS) stays off on these machines: set before the first communicator.
    setenv("NCCL_NVLS_ENABLE", "0", 1);
    api_.get_version(&version_);
    comms_.assign(devices.size(), nullptr);
    api_.check(api_.comm_init_all(comms_.data(), static_cast<int>(devices.size()), devices.data()), "ncclCommInitAll");
    for (size_t r = 0; r < devices.size(); ++r) ranks_.push_back(std::make_unique<NcclTransport>(*this, static_cast<int>(r)));
  }
  ~NcclGroup() override {
    if (aborted_) return;  // abort() freed the communicators
    for (size_t r = 0; r < comms_.size(); ++r)
      if (comms_[r]) {
        (void)cudaSetDevice(devices_[r]);
        api_.comm_destroy(comms_[r]);
      }
  }
  EpTransport& rank(int r) override { return *ranks_.at(static_cast<size_t>(r)); }
  int world() const override { return static_cast<int>(devices_.size()); }
  std::string describe() const override {
    return fmt::format("NCCL {}.{}.{} over devices {}", version_ / 10000, version_ / 100 % 100, version_ % 100,
                       device_list(devices_));
  }
  void all_gather(int r, const float* send, float* recv, size_t n, cudaStream_t stream) {
    ncclComm_t comm = nullptr;
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (aborted_) fail(Status::backend, "expert-parallel group aborted: {}", why_);
      comm = comms_[static_cast<size_t>(r)];
    }
    // Enqueues only (the wait happens in the kernel on `stream`), so an abort from another rank's
    // thread meets a collective in flight on the GPU, which is what ncclCommAbort releases.
    api_.check(api_.all_gather(send, recv, n, ncclFloat32, comm, stream), "ncclAllGather");
  }
  void abort(int rank, const std::string& why) {
    std::lock_guard<std::mutex> lk(mu_);
    if (aborted_) return;
    aborted_ = true;
    why_ = fmt::format("rank {}: {}", rank, why);
    // Releases the collectives the other ranks wait in; their steps then fail with NCCL's error.
    int current = 0;
    (void)cudaGetDevice(&current);
    for (size_t q = 0; q < comms_.size(); ++q) {
      (void)cudaSetDevice(devices_[q]);
      api_.comm_abort(comms_[q]);
    }
    (void)cudaSetDevice(current);
  }

 private:
  NcclApi api_;
  std::vector<int> devices_;
  int version_ = 0;
  std::vector<ncclComm_t> comms_;
  std::vector<std::unique_ptr<NcclTransport>> ranks_;
  std::mutex mu_;
  bool aborted_ = false;
  std::string why_;
};

void NcclTransport::all_gather(const float* send, float* recv, size_t n, cudaStream_t stream) {
  g_.all_gather(rank_, send, recv, n, stream);
}
void NcclTransport::abort(const std::string& why) { g_.abort(rank_, why); }
int NcclTransport::world() const { return g_.world(); }

}  // namespace

std::unique_ptr<EpGroup> EpGroup::make(EpTransportKind kind, const std::vector<int>& devices) {
  if (devices.empty()) fail(Status::invalid_argument, "expert parallelism: no devices");
  if (kind == EpTransportKind::nccl) return std::make_unique<NcclGroup>(devices);
  return std::make_unique<HostGroup>(devices);
}

}  // namespace dsv4::cuda
