// Model: a loaded checkpoint that computes next-token logits for a ForwardBatch.
//
// load_model picks the architecture's recipe (model/arch/<name>.cpp) from the config. The
// forward pass is written only with ops:: calls, so the same recipe runs wherever the ops run.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "moeopt/core/status.h"
#include "moeopt/model/config.h"
#include "moeopt/model/forward_batch.h"
#include "moeopt/ops/context.h"

namespace moeopt {

// Shape of one layer's K (or V) cache page pool, per block: [block_size, kv_heads, head_dim].
// latent (MLA, ops/mla.h): one pool per layer, no V: LayerKv::k holds the latent rows
// [num_blocks, block_size, 1, kv_lora_rank + qk_rope_head_dim] and LayerKv::v is empty.
struct KvLayout {
  int64_t num_layers = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  bool latent = false;
};

class Model {
 public:
  virtual ~Model() = default;
  virtual const ModelConfig& config() const = 0;
  virtual KvLayout kv_layout() const = 0;
  // Runs the batch; writes new keys/values into `kv` (one entry per layer) and the logits of
  // batch.logits_rows into `logits` [logits_rows.size(), vocab] f32.
  virtual Status forward(const ops::Context& ctx, const ForwardBatch& batch,
                         const std::vector<LayerKv>& kv, const TensorView& logits) = 0;
  // forward() in two phases, for device runners that capture CUDA graphs: prepare() copies
  // the batch's index vectors to the model's device (into ctx.arena) and updates host-side
  // tables; run() only launches work, so it may be captured and replayed, as long as every
  // replay prepares a batch of the same shape into the same arena positions first.
  virtual Result<BatchTensors> prepare(const ops::Context& ctx, const ForwardBatch& batch) = 0;
  virtual Status run(const ops::Context& ctx, const ForwardBatch& batch, const BatchTensors& t,
                     const std::vector<LayerKv>& kv, const TensorView& logits) = 0;
  // Where the weights live.
  virtual Device device() const = 0;
};

// Loads config.json and the safetensors weights of a checkpoint directory. A pre-quantized
// FP8 checkpoint (quantization_config fp8, 128x128 blocks, dynamic activations) runs its
// fp8 weights as W8A8 (ops/fp8.h).
Result<std::unique_ptr<Model>> load_model(const std::string& dir);

// What load_model does to the weights on the way in (CPU).
enum class WeightFormat {
  kAsStored,    // the checkpoint's own dtypes
  kFp8,         // online quantisation of every FP8-eligible linear still in bf16/f16/f32
                // to fp8 with 128x128 block scales (--fp8-weights on); fp8 ones stay
  kDequantized  // fp8 weights dequantised to f32 (w_q * scale): the reference of the W8A8
                // path on the same values
};
struct ExpertImportance;  // model/weights.h
struct LoadOptions {
  WeightFormat format = WeightFormat::kAsStored;
  // 2:4 pruning of the routed experts (WeightStore::prune_experts_2_4), before the format
  // conversion: the CPU reference of a sparse expert path (ops/sparsity.h). By magnitude,
  // or activation-aware with `sparsity_importance` (model/quality.h expert_importance).
  bool sparsity_2_4 = false;
  const ExpertImportance* sparsity_importance = nullptr;
  ops::Context ctx;  // threads for the conversion
};
Result<std::unique_ptr<Model>> load_model(const std::string& dir, const LoadOptions& options);

struct DeviceWeightsOptions;  // model/device_weights.h
class WeightStore;            // model/weights.h
// The same, with the weights uploaded to the device of options.ctx (bf16; fp8 weights and
// their scales as stored; options.fp8 quantises the rest on the device, model/device_weights.h).
Result<std::unique_ptr<Model>> load_model_to_device(const std::string& dir,
                                                    const DeviceWeightsOptions& options);
// A model of `config` whose init-random weights (seed) are generated on the device (fp8
// ones, for an fp8 config or options.fp8, quantised there).
Result<std::unique_ptr<Model>> random_model_on_device(ModelConfig config, uint64_t seed,
                                                      const DeviceWeightsOptions& options);
// The architecture's recipe over weights already opened or placed.
Result<std::unique_ptr<Model>> make_model(ModelConfig config, WeightStore store);

}  // namespace moeopt
