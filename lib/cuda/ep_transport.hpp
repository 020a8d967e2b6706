// The exchange of expert parallelism (docs/expert-parallel.md): every rank's partial MoE output is
// gathered by every rank, which then sums the W partials in rank order (ep_reduce) — so every
// replica computes the same bits whatever the transport. Two transports behind one interface:
//   nccl — ncclAllGather over one communicator per rank (distinct devices; NCCL is loaded at run
//          time from libnccl.so.2, so a build without NCCL users never needs it);
//   host — same-process copies (cudaMemcpyPeerAsync) ordered by events and a host barrier: any
//          device list, ranks may share a device (how the multi-rank code is tested on one GPU).
// An EpGroup owns the W transports of one expert-parallel backend. Its rank r transport is used by
// one host thread only (rank r's). abort() unblocks every rank waiting in an exchange (host: the
// barrier; nccl: ncclCommAbort) and makes every later exchange throw Error(backend) naming the
// first failure: a failed rank never leaves the others hanging.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

namespace dsv4::cuda {

enum class EpTransportKind { nccl, host };

class EpTransport {
 public:
  virtual ~EpTransport() = default;
  // recv[q·n, (q+1)·n) = rank q's `send` (n floats) for every rank q, ordered on `stream` (a stream of
  // this rank's device): send may be rewritten by later work on `stream`, recv read by it.
  virtual void all_gather(const float* send, float* recv, size_t n, cudaStream_t stream) = 0;
  // Marks the group failed (first reason kept) and unblocks the others.
  virtual void abort(const std::string& why) = 0;
  virtual int rank() const = 0;
  virtual int world() const = 0;
};

class EpGroup {
 public:
  virtual ~EpGroup() = default;
  // devices[r]: rank r's device. nccl: distinct devices (Error(invalid_argument) otherwise),
  // Error(unsupported) when libnccl.so.2 cannot be loaded (DSV4_NCCL_LIBRARY names another file).
  static std::unique_ptr<EpGroup> make(EpTransportKind kind, const std::vector<int>& devices);
  virtual EpTransport& rank(int r) = 0;
  virtual int world() const = 0;
  virtual std::string describe() const = 0;  // "nccl 2.28.9 over devices 0,1", for the load log
};

}  // namespace dsv4::cuda
