// DeviceRunner: runs engine steps on a device (GPU) model. The engine's scheduler, block
// manager and batch building are unchanged; this class owns what lives on the device:
//   - the paged KV cache (bf16 or fp8) and a scratch arena for each step's temporaries,
//   - the runner's own stream, and CUDA graphs of pure decode steps for a ladder of batch
//     sizes (1, 2, 4, 8, 16, 24, 32, 48, 64, ... up to max_num_seqs): a decode batch of S
//     sequences (S <= cuda_graph_max_batch) is padded to the next size G >= S (padding rows: token 0, no KV write,
//     context 1) and replays the graph captured for G. Graphs are captured at start-up from
//     the largest size down, each after one eager warm-up step, so every buffer a graph uses
//     has its final size before capture. Prefill and mixed steps run eagerly.
//   - sampling on the device: argmax when every row is greedy without penalties or logprobs,
//     else the backend's batched sampler (ops/sampling.h) with the uniform drawn here from
//     each request's generator, exactly one draw per non-greedy sample as the CPU sampler
//     does. Only sampled tokens (and logprobs when asked) cross PCIe; the logits of the last
//     prompt position come back only for requests that asked for them.
#pragma once

#include <map>
#include <memory>
#include <vector>

#include "moeopt/core/status.h"
#include "moeopt/engine/kv_cache.h"
#include "moeopt/engine/sequence.h"
#include "moeopt/model/model.h"
#include "moeopt/ops/context.h"
#include "moeopt/ops/scratch.h"

namespace moeopt {

struct DeviceRunnerOptions {
  int32_t num_blocks = 0;
  int32_t block_size = 16;
  int32_t max_num_seqs = 64;
  int32_t max_model_len = 0;
  bool cuda_graphs = true;
  int32_t cuda_graph_max_batch = 256;  // decode batches above this run eagerly
  DType kv_dtype = DType::kBF16;       // or kF8E4M3 (EngineOptions::fp8_kv_cache)
};

class DeviceRunner {
 public:
  static Result<std::unique_ptr<DeviceRunner>> create(Model& model, ops::DeviceBackend* backend,
                                                      const DeviceRunnerOptions& options);
  ~DeviceRunner();

  const std::vector<LayerKv>& kv_layers() const { return kv_->layers(); }
  // Runs the batch and samples one token for each of `sampling` (the sequences owning
  // b.logits_rows, in order). Sets prompt_logits_last of sequences that want it.
  Result<std::vector<SampleResult>> step(ForwardBatch& b, const std::vector<Sequence*>& sampling);
  int num_graphs() const { return int(graphs_.size()); }

 private:
  DeviceRunner(Model& model, ops::DeviceBackend* backend, DeviceRunnerOptions o);
  ops::Context context() const;
  // A decode batch of `g` padding rows (see the file comment).
  ForwardBatch padding_batch(int32_t g) const;
  // Pads a decode batch of S <= g sequences to g rows.
  void pad_decode_batch(ForwardBatch& b, int32_t g) const;
  Status capture_graphs();
  Result<std::vector<SampleResult>> sample(const TensorView& logits,
                                           const std::vector<Sequence*>& sampling);

  Model& model_;
  ops::DeviceBackend* backend_;
  DeviceRunnerOptions opt_;
  void* stream_ = nullptr;
  std::unique_ptr<ops::ScratchArena> arena_;
  std::unique_ptr<KvCache> kv_;
  int32_t graph_blocks_per_seq_ = 0;  // block-table width of captured batches
  std::vector<int32_t> ladder_;
  std::map<int32_t, void*> graphs_;   // batch size -> executable graph
};

}  // namespace moeopt
