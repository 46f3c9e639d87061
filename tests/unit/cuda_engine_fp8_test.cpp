// The GPU engine with FP8 W8A8 weights (model/device_weights.h, ops/fp8.h) on the tiny golden
// configs (tests/reference/golden_configs), against the CPU reference:
//   - weights: the device's own quantisation (online, of the uploaded bf16 checkpoint; and of
//     random weights generated on the device) is byte-identical to the init-random --fp8
//     checkpoint of the same seed with f32 scales, uploaded as stored;
//   - logits: at the last prompt position the GPU FP8 engine is compared with the CPU FP8
//     engine (same codes and scales; the GPU quantises bf16 activations, the CPU f32 ones)
//     and with the CPU BF16 engine. The FP8 pair must agree to kFp8LogitTol on max |dlogit|,
//     and the GPU must be closer to the CPU's FP8 than to its BF16 logits (it really runs the
//     fp8 weights): the printed numbers say by how much.
// Every test skips without a CUDA device.
#include <gtest/gtest.h>

#if MOEOPT_HAVE_CUDA

#include <cuda_runtime.h>

#include "cuda_test_support.h"

#include <cmath>
#include <filesystem>

#include "moeopt/backend/cuda/cuda_backend.h"
#include "moeopt/core/file_io.h"
#include "moeopt/engine/engine.h"
#include "moeopt/model/config.h"
#include "moeopt/model/device_weights.h"
#include "moeopt/model/model_cache.h"
#include "moeopt/model/random_init.h"
#include "moeopt/model/weights.h"
#include "golden_support.h"

namespace fs = std::filesystem;

namespace moeopt {
namespace {

// bf16 activations before each activation quantisation flip some e4m3 codes by one step
// (a relative 2^-4 on that element); over the tiny models' O(1-10) logits the measured gap
// is a few hundredths (docs/perf.md); 0.25 leaves room while a wrong scale, block index or
// weight gives O(1).
constexpr double kFp8LogitTol = 0.25;
const fs::path kSource = MOEOPT_SOURCE_DIR;

std::vector<std::string> fp8_configs() {
  return {"qwen3_moe_basic", "qwen3_moe_top1_tied_odd", "mixtral_basic", "qwen2_moe_basic"};
}

class CudaFp8EngineTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    SKIP_WITHOUT_GPU();
    const std::string config_path =
        (kSource / "tests/reference/golden_configs" / (GetParam() + ".json")).string();
    auto cfg = load_model_config(config_path);
    ASSERT_TRUE(cfg.ok()) << cfg.status().message();
    config_ = *cfg;
    auto dir = materialize_random_checkpoint(config_path, 0, std::nullopt, "");
    ASSERT_TRUE(dir.ok()) << dir.status().message();
    dir_ = *dir;
    ctx_.device_backend = &backend_;
    auto text = read_file((kSource / "tests/data/goldens" / (GetParam() + ".json.gz")).string());
    ASSERT_TRUE(text.ok()) << text.status().message();
    requests_ = golden_requests(nlohmann::json::parse(*text));
    for (auto& r : requests_) r.params.max_tokens = 1;
  }

  DeviceWeightsOptions fp8_options() {
    DeviceWeightsOptions wo;
    wo.ctx = &ctx_;
    wo.fp8 = true;
    return wo;
  }

  // Logits at the last prompt position of every request.
  std::vector<std::vector<float>> last_logits(std::unique_ptr<Model> model, ops::DeviceBackend* dev) {
    EngineOptions eo;
    eo.device = dev;
    eo.max_num_seqs = 8;
    auto e = Engine::create(std::move(model), eo);
    EXPECT_TRUE(e.ok()) << e.status().message();
    if (!e.ok()) return {};
    auto out = run_to_completion(**e, requests_);
    EXPECT_TRUE(out.ok()) << out.status().message();
    std::vector<std::vector<float>> l;
    if (out.ok())
      for (auto& c : *out) l.push_back(c.prompt_logits_last);
    return l;
  }

  // The backend outlives the models (declared first, destroyed last).
  cuda::CudaBackend backend_;
  ops::Context ctx_;
  ModelConfig config_;
  std::string dir_;
  std::vector<Request> requests_;
};

// Bytes of a device tensor, row by row (rows may be padded).
std::vector<uint8_t> device_bytes(const TensorView& v) {
  const int64_t rows = v.ndim() >= 2 ? v.shape[0] : 1, cols = v.numel() / std::max<int64_t>(rows, 1);
  const size_t es = dtype_size(v.dtype), pitch = size_t(v.ndim() >= 2 ? v.strides[0] : cols) * es;
  std::vector<uint8_t> out(size_t(rows * cols) * es);
  if (!out.empty())
    EXPECT_EQ(cudaMemcpy2D(out.data(), size_t(cols) * es, v.data, pitch, size_t(cols) * es, size_t(rows),
                           cudaMemcpyDeviceToHost),
              cudaSuccess);
  return out;
}

TEST_P(CudaFp8EngineTest, DeviceQuantisationEqualsTheFp8Checkpoint) {
  const std::string fp8_dir = (fs::path(dir_).parent_path() / (fs::path(dir_).filename().string() + "-fp8-f32")).string();
  RandomInitOptions ro;
  ro.fp8 = true;
  ro.fp8_scale_dtype = DType::kF32;
  auto written = write_random_checkpoint(config_, fp8_dir, ro);
  ASSERT_TRUE(written.ok()) << written.status().message();
  auto fp8_cfg = load_model_config((fs::path(fp8_dir) / "config.json").string());
  ASSERT_TRUE(fp8_cfg.ok()) << fp8_cfg.status().message();
  auto fp8_host = WeightStore::open(fp8_dir, *fp8_cfg);
  auto bf16_host = WeightStore::open(dir_, config_);
  ASSERT_TRUE(fp8_host.ok() && bf16_host.ok());
  DeviceWeightsOptions plain;
  plain.ctx = &ctx_;
  auto stored = upload_weights(*fp8_cfg, *fp8_host, plain);
  auto online = upload_weights(config_, *bf16_host, fp8_options());
  auto generated = random_device_weights(config_, 0, fp8_options());
  ASSERT_TRUE(stored.ok()) << stored.status().message();
  ASSERT_TRUE(online.ok()) << online.status().message();
  ASSERT_TRUE(generated.ok()) << generated.status().message();
  int64_t fp8_tensors = 0;
  for (const TensorSpec& s : stored->specs()) {
    auto a = stored->get(s.name), b = online->get(s.name), c = generated->get(s.name);
    ASSERT_TRUE(a.ok() && b.ok() && c.ok()) << s.name;
    ASSERT_EQ(a->dtype, b->dtype) << s.name;
    fp8_tensors += a->dtype == DType::kF8E4M3;
    const auto ba = device_bytes(*a);
    EXPECT_EQ(ba, device_bytes(*b)) << s.name << ": online quantisation of the upload";
    EXPECT_EQ(ba, device_bytes(*c)) << s.name << ": quantised random weights";
  }
  EXPECT_GT(fp8_tensors, 0);
  std::filesystem::remove_all(fp8_dir);
}

TEST_P(CudaFp8EngineTest, LogitsMatchTheCpuFp8Reference) {
  auto gpu = load_model_to_device(dir_, fp8_options());
  ASSERT_TRUE(gpu.ok()) << gpu.status().message();
  LoadOptions fp8_load;
  fp8_load.format = WeightFormat::kFp8;
  auto cpu_fp8 = load_model(dir_, fp8_load);
  auto cpu_bf16 = load_model(dir_);
  ASSERT_TRUE(cpu_fp8.ok() && cpu_bf16.ok());
  const auto g = last_logits(std::move(*gpu), &backend_);
  const auto f = last_logits(std::move(*cpu_fp8), nullptr);
  const auto b = last_logits(std::move(*cpu_bf16), nullptr);
  ASSERT_EQ(g.size(), requests_.size());
  ASSERT_EQ(f.size(), g.size());
  ASSERT_EQ(b.size(), g.size());
  double worst_fp8 = 0, worst_bf16 = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    ASSERT_EQ(g[i].size(), f[i].size());
    double df = 0, db = 0;
    for (size_t v = 0; v < g[i].size(); ++v) {
      df = std::max(df, std::fabs(double(g[i][v]) - f[i][v]));
      db = std::max(db, std::fabs(double(g[i][v]) - b[i][v]));
    }
    EXPECT_LE(df, kFp8LogitTol) << GetParam() << " prompt " << i;
    worst_fp8 = std::max(worst_fp8, df);
    worst_bf16 = std::max(worst_bf16, db);
  }
  EXPECT_LT(worst_fp8, worst_bf16) << "the GPU FP8 logits are not closer to the CPU FP8 reference "
                                      "than to BF16";
  std::printf("%s: GPU fp8 vs CPU fp8 max |dlogit| %.3g; vs CPU bf16 %.3g\n", GetParam().c_str(),
              worst_fp8, worst_bf16);
}

INSTANTIATE_TEST_SUITE_P(Configs, CudaFp8EngineTest, ::testing::ValuesIn(fp8_configs()),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace moeopt

#endif  // MOEOPT_HAVE_CUDA
