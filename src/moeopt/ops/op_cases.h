// The op-case table: one data table of {op, shape parameters, dtypes, metric, tolerance}
// that drives the CPU op tests (tests/unit/ops_*_test.cpp, each against an independent
// double-precision reference), and later the CUDA-vs-CPU tests and the op benchmarks.
// Plus the comparison metrics and a deterministic input generator they share.
//
// Field meanings per op (unused fields stay 0):
//   embedding           m = tokens, n = hidden, k = vocab
//   rms_norm            m = rows, n = hidden
//   add_rms_norm        m = rows, n = hidden
//   rms_norm_per_head   m = tokens, heads, head_dim
//   linear              m = rows, n = out features, k = in features, bias
//   linear_fp8          as linear; the weight is fp8 e4m3 with f32 128x128 block scales
//                       and x is quantised per token (W8A8, ops/fp8.h)
//   silu_and_mul        m = rows, n = intermediate (x is [m, 2n])
//   silu                m = rows, n = columns
//   rope                m = tokens, heads (q), kv_heads, head_dim, rotary_dim, rope_*,
//                       k = max position + 1 (positions drawn below it)
//   kv_cache_write /    heads (q), kv_heads, head_dim, block_size, sliding_window,
//   paged_attention     q_lens / ctx_lens per sequence (new tokens / total tokens)
//   moe_route           m = tokens, experts, top_k, scoring/grouping/renormalize/...
//   moe_permute         m = tokens, experts, top_k, pad_rows_to
//   moe_forward         m = tokens, n = hidden, k = intermediate, experts, top_k, stacked,
//                       pad_rows_to, routing fields
//   moe_forward_fp8     as moe_forward with fp8 e4m3 experts and their block scales (ops/moe.h)
//   argmax, log_softmax m = rows, n = vocab
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "moeopt/core/dtype.h"
#include "moeopt/core/tensor.h"
#include "moeopt/ops/moe.h"
#include "moeopt/ops/rope.h"

namespace moeopt::ops {

enum class OpKind {
  kEmbedding,
  kRmsNorm,
  kAddRmsNorm,
  kRmsNormPerHead,
  kLinear,
  kSiluAndMul,
  kSilu,
  kRope,
  kKvCacheWrite,
  kPagedAttention,
  kMoeRoute,
  kMoePermute,
  kMoeForward,
  kArgmax,
  kLinearFp8,
  kMoeForwardFp8,
  kLogSoftmax,
};

// How an op's float output is compared with the reference.
enum class Metric {
  kNormalizedMse,  // sum((got - ref)^2) / sum(ref^2) <= tolerance
  kMaxRelError,    // max |got - ref| / max |ref| <= tolerance
  kExact,          // bit-equal values (integers, copies)
  kTopkSet,        // per row, the same set of ids (order free); ties within tolerance of the
                   // k-th reference value may swap; duplicates always fail
};

struct OpCase {
  const char* name = "";
  OpKind op = OpKind::kLinear;
  int64_t m = 0, n = 0, k = 0;
  int heads = 0, kv_heads = 0, head_dim = 0, rotary_dim = 0;
  int block_size = 0, sliding_window = 0;
  std::vector<int> q_lens{}, ctx_lens{};
  int experts = 0, top_k = 0, pad_rows_to = 1;
  RouterScoring scoring = RouterScoring::kSoftmax;
  ExpertGrouping grouping = ExpertGrouping::kNone;
  int n_group = 1, topk_group = 1;
  bool renormalize = false, correction_bias = false, stacked = true, bias = false;
  float routed_scaling_factor = 1.0f;
  RopeType rope_type = RopeType::kDefault;
  double rope_factor = 1.0;
  DType weight_dtype = DType::kBF16;  // weights / embedding table
  DType cache_dtype = DType::kF32;    // KV cache
  Metric metric = Metric::kNormalizedMse;
  double tolerance = 1e-10;
};

// gtest prints a case by its name.
inline void PrintTo(const OpCase& c, std::ostream* os) { *os << c.name; }

const char* op_kind_name(OpKind k);
const char* metric_name(Metric m);

// The whole table, and the cases of one op.
const std::vector<OpCase>& op_cases();
std::vector<OpCase> op_cases_for(OpKind k);

// Result of a comparison: ok, the metric's value, and a one-line description of the worst
// element for failures.
struct Comparison {
  bool ok = false;
  double value = 0.0;
  std::string detail;
};

// Float output vs a double reference with kNormalizedMse / kMaxRelError / kExact. Any NaN or
// infinity in `got` where the reference is finite fails (poisoned outputs never written).
Comparison compare_values(const float* got, const double* ref, int64_t n, Metric metric,
                          double tolerance);
// Top-k ids per row as sets (kTopkSet): got/ref [rows, k]; ref_score [rows, num] the
// reference selection scores used to accept ties within `tolerance`.
Comparison compare_topk_sets(const int32_t* got, const int32_t* ref, const double* ref_score,
                             int64_t rows, int k, int64_t num, double tolerance);

// Deterministic generator (splitmix64) for case inputs.
class CaseRng {
 public:
  explicit CaseRng(uint64_t seed) : s_(seed) {}
  explicit CaseRng(const std::string& name);  // seeded from a case name
  uint64_t next();
  double uniform(double lo, double hi);
  // Uniform in +-[lo, hi]: never zero, random sign.
  double nonzero(double lo = 0.05, double hi = 1.0);
  int64_t below(int64_t n);  // [0, n)

 private:
  uint64_t s_;
};

// Test-input helpers (host tensors):
// a contiguous tensor of `dtype` with values uniform in +-[lo, hi] (never zero), rounded to
// the dtype; float dtypes only.
HostTensor random_tensor(DType dtype, const Shape& shape, CaseRng& rng, double lo = 0.05,
                         double hi = 1.0);
// Fill every element with a poison value (NaN for floats, INT32_MIN for int32) so a test
// can prove an op wrote every output element.
void poison(const TensorView& t);
// Elements of a contiguous host tensor as doubles.
std::vector<double> to_doubles(const TensorView& t);

}  // namespace moeopt::ops
