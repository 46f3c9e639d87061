// CudaBackend::sample (backend/cuda/cuda_sampling.cpp) against the engine's CPU sampler,
// moeopt::sample_token (engine/sampler.h), row by row.
//
// Each row gets SamplingParams, a TokenHistory and a seed. The host draw is made as the engine
// makes it: one RequestRng::uniform() per sampled row per step (none for a greedy row), which
// is exactly the one draw sample_token makes for a sampled token, so the CPU run with an
// identically seeded RequestRng sees the same u. The GPU gets u rounded to f32 (the
// interface's dtype) or, in the cases that say so, the f64 value itself. The history goes to
// the GPU in the batch's CSR form (every seen token once, in shuffled order, count = times
// generated, 0 for prompt-only tokens).
//
// How a row is judged:
//   token    equal to the CPU's, except where the two tokens are neighbours in the CPU's
//            survivor order and the CPU's cumulative mass at every boundary between them is
//            within 1e-5 of u * total (float rounding of u or of a sum decides the draw):
//            such rows are counted, must stay under 10% of the rows, and are reported;
//   logprob  within 1e-4 of the CPU's raw logprob of the GPU's token;
//   top      num_logprobs entries: values within 1e-4 of the CPU's, ids equal unless the CPU's
//            raw logprobs of the two ids tie (within 1e-6); positions past V are id -1.
// Cases: greedy with ties (fast path, V = 151936 vectorised and V = 7 / 4099 scalar), greedy
// with logprobs and penalties (general path, no sort), temperature only, top-k, top-p, min-p,
// all combined, repetition / presence / frequency penalties, mixed greedy and sampled rows,
// quantised logits (ties in probability: stable id order), R = 1 and 256, logprobs 0/1/20.
// GPU tests skip without a CUDA device. Run: build/tests/test_cuda --gtest_filter='CudaSampling*'
#include <gtest/gtest.h>

#if MOEOPT_HAVE_CUDA

#include <cuda_runtime.h>

#include "cuda_test_support.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "moeopt/backend/cuda/cuda_backend.h"
#include "moeopt/core/thread_pool.h"
#include "moeopt/engine/sampler.h"
#include "moeopt/ops/sampling.h"

namespace moeopt {
namespace {

constexpr int kQwenVocab = 151936;
constexpr double kBoundaryMass = 1e-5;
constexpr float kLogprobTol = 1e-4f;

ThreadPool& pool() {
  static ThreadPool p(0);
  return p;
}

// Owning device buffer holding a copy of a host vector.
class DevBuf {
 public:
  template <class T>
  DevBuf(const std::vector<T>& host, DType dtype, const Shape& shape) {
    bytes_ = std::max<size_t>(16, host.size() * sizeof(T));
    EXPECT_EQ(cudaMalloc(&p_, bytes_), cudaSuccess);
    if (!host.empty()) {
      EXPECT_EQ(cudaMemcpy(p_, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice),
                cudaSuccess);
    }
    v_ = TensorView::contiguous(p_, dtype, shape, Device::kCuda);
  }
  ~DevBuf() { cudaFree(p_); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  const TensorView& view() const { return v_; }
  template <class T>
  std::vector<T> download(size_t n) const {
    std::vector<T> h(n);
    if (n > 0) {
      EXPECT_EQ(cudaMemcpy(h.data(), p_, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    }
    return h;
  }

 private:
  void* p_ = nullptr;
  size_t bytes_ = 0;
  TensorView v_;
};

double normal(std::mt19937_64& g) {
  std::uniform_real_distribution<double> u(1e-12, 1.0);
  return std::sqrt(-2.0 * std::log(u(g))) * std::cos(6.283185307179586 * u(g));
}

enum class LogitKind {
  kSpread,     // N(0, 2) with a few tokens lifted by 5..12 (LLM-like peaks)
  kQuantised,  // the same rounded to multiples of 0.25: many exact ties
};

// [R, V] logits. Every row also gets its maximum repeated at three random ids (greedy ties);
// with kQuantised row 0 is constant (every id ties).
std::vector<float> make_logits(int rows, int vocab, uint64_t seed, LogitKind kind) {
  std::vector<float> l(size_t(rows) * size_t(vocab));
  pool().parallel_for(rows, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      std::mt19937_64 g(seed * 1000003u + uint64_t(r));
      float* x = l.data() + size_t(r) * size_t(vocab);
      std::uniform_real_distribution<double> lift(5.0, 12.0), coin(0.0, 1.0);
      const double p_lift = vocab < 100 ? 0.2 : 0.001;
      for (int i = 0; i < vocab; ++i) {
        double v = 2.0 * normal(g);
        if (coin(g) < p_lift) v += lift(g);
        if (kind == LogitKind::kQuantised) v = std::round(v * 4.0) / 4.0;
        x[i] = float(v);
      }
      const float mx = *std::max_element(x, x + vocab);
      std::uniform_int_distribution<int> pick(0, vocab - 1);
      for (int t = 0; t < 3; ++t) x[pick(g)] = mx;
      if (kind == LogitKind::kQuantised && r == 0) std::fill(x, x + vocab, 1.5f);
    }
  });
  return l;
}

struct RowSetup {
  SamplingParams params;
  TokenHistory history;
  uint64_t seed = 0;
};

// A history whose outputs include some of the row's best tokens (so penalties change ranks).
void make_history(RowSetup& row, const float* x, int vocab, std::mt19937_64& g) {
  std::uniform_int_distribution<int> any(0, vocab - 1);
  std::vector<int32_t> prompt;
  const int prompt_len = vocab < 100 ? 2 : 64;
  for (int i = 0; i < prompt_len; ++i) prompt.push_back(any(g));
  row.history.reset(vocab, prompt);
  std::vector<int32_t> order(static_cast<size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  const int best = std::min(vocab, 16);
  std::partial_sort(order.begin(), order.begin() + best, order.end(),
                    [&](int32_t a, int32_t b) { return x[a] > x[b] || (x[a] == x[b] && a < b); });
  std::uniform_int_distribution<int> top(0, best - 1);
  const int outputs = vocab < 100 ? 4 : 40;
  for (int i = 0; i < outputs; ++i)
    row.history.add_output(i % 2 == 0 ? order[size_t(top(g))] : any(g));
}

struct Case {
  std::string name;
  int rows = 1;
  int vocab = kQwenVocab;
  int num_logprobs = 0;
  LogitKind kind = LogitKind::kSpread;
  bool penalties = false;       // histories and penalty settings
  bool f64_uniform = false;
  bool pass_workspace = false;  // ctx.workspace of sample_workspace_bytes()
  bool all_greedy_hint = false;
  std::function<void(int, std::mt19937_64&, SamplingParams&)> settings;
};

// The CPU sampler's raw log_softmax (engine/sampler.cpp), for ties and mismatched tokens.
std::vector<float> cpu_raw_logprobs(const float* x, int vocab) {
  float mx = -std::numeric_limits<float>::infinity();
  for (int i = 0; i < vocab; ++i) mx = std::max(mx, x[i]);
  double sum = 0.0;
  for (int i = 0; i < vocab; ++i) sum += std::exp(double(x[i]) - mx);
  const float lse = mx + float(std::log(sum));
  std::vector<float> out(static_cast<size_t>(vocab));
  for (int i = 0; i < vocab; ++i) out[size_t(i)] = x[i] - lse;
  return out;
}

// The CPU sampler's survivors (engine/sampler.cpp's steps 1-5, redone here) in its order.
struct Survivors {
  std::vector<int32_t> order;
  std::vector<double> prob;
  double total = 0.0;
};

Survivors cpu_survivors(const float* raw, int vocab, const RowSetup& row) {
  const SamplingParams& p = row.params;
  Survivors s;
  std::vector<float> l(raw, raw + vocab);
  apply_penalties(l, p, row.history);
  const float mx = *std::max_element(l.begin(), l.end());
  s.prob.resize(size_t(vocab));
  double sum = 0.0;
  for (int i = 0; i < vocab; ++i)
    sum += s.prob[size_t(i)] = std::exp((double(l[i]) - mx) / p.temperature);
  for (double& v : s.prob) v /= sum;
  const std::vector<double>& prob = s.prob;
  std::vector<int32_t>& order = s.order;
  order.resize(size_t(vocab));
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int32_t x, int32_t y) {
    return prob[x] > prob[y] || (prob[x] == prob[y] && x < y);
  });
  if (p.top_k > 0 && p.top_k < vocab) order.resize(size_t(p.top_k));
  if (p.top_p < 1.0f) {
    double kept = 0.0, acc = 0.0;
    for (int32_t t : order) kept += prob[t];
    size_t cut = order.size();
    for (size_t i = 0; i < order.size(); ++i) {
      acc += prob[order[i]] / kept;
      if (acc >= p.top_p) {
        cut = i + 1;
        break;
      }
    }
    order.resize(cut);
  }
  if (p.min_p > 0.0f) {
    const double threshold = p.min_p * prob[order[0]];
    size_t cut = 1;
    while (cut < order.size() && prob[order[cut]] >= threshold) ++cut;
    order.resize(cut);
  }
  for (int32_t t : order) s.total += prob[t];
  return s;
}

// The CPU sampler's token for a given u (its draw loop).
int32_t cpu_draw(const Survivors& s, double u) {
  const double target = u * s.total;
  double acc = 0.0;
  for (int32_t t : s.order) {
    acc += s.prob[size_t(t)];
    if (target < acc) return t;
  }
  return s.order.back();
}

// Largest |cumulative mass - u * total| over the boundaries between tokens a and b in the
// CPU's survivor order; +inf when the row is greedy or either token did not survive.
double boundary_gap(const float* raw, int vocab, const RowSetup& row, double u, int a, int b) {
  if (row.params.greedy()) return std::numeric_limits<double>::infinity();
  const Survivors s = cpu_survivors(raw, vocab, row);
  const std::vector<int32_t>& order = s.order;
  const auto pa = std::find(order.begin(), order.end(), a) - order.begin();
  const auto pb = std::find(order.begin(), order.end(), b) - order.begin();
  if (size_t(pa) == order.size() || size_t(pb) == order.size())
    return std::numeric_limits<double>::infinity();
  double acc = 0.0, gap = 0.0;
  for (ptrdiff_t i = 0; i < std::max(pa, pb); ++i) {
    acc += s.prob[size_t(order[size_t(i)])];
    if (i >= std::min(pa, pb)) gap = std::max(gap, std::abs(acc - u * s.total));
  }
  return gap;
}

void check_case(const Case& c) {
  SCOPED_TRACE(c.name);
  const int rows = c.rows, vocab = c.vocab, n_top = c.num_logprobs;
  const std::vector<float> logits = make_logits(rows, vocab, std::hash<std::string>{}(c.name),
                                                c.kind);

  // Per-row settings, histories and draws.
  std::vector<RowSetup> setup(static_cast<size_t>(rows));
  std::vector<double> u(size_t(rows), 0.0);
  std::mt19937_64 g(std::hash<std::string>{}(c.name) ^ 0x5eedu);
  bool any_penalty = false, all_greedy = true;
  for (int r = 0; r < rows; ++r) {
    RowSetup& row = setup[size_t(r)];
    row.params.logprobs = n_top;
    c.settings(r, g, row.params);
    row.seed = g();
    row.history.reset(vocab, {});
    if (c.penalties) make_history(row, logits.data() + size_t(r) * size_t(vocab), vocab, g);
    any_penalty = any_penalty || !row.history.output_counts.empty() ||
                  std::count(row.history.seen.begin(), row.history.seen.end(), 1) > 0;
    all_greedy = all_greedy && row.params.greedy();
    RequestRng rng(row.seed);
    if (!row.params.greedy()) u[size_t(r)] = rng.uniform();  // the engine's one draw per row
  }
  ASSERT_EQ(all_greedy, c.all_greedy_hint) << "case settings and hint disagree";

  // CPU reference, rows in parallel (each row has its own generator).
  std::vector<SampleResult> cpu(static_cast<size_t>(rows));
  pool().parallel_for(rows, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      std::vector<float> x(logits.begin() + r * vocab, logits.begin() + (r + 1) * vocab);
      RequestRng rng(setup[size_t(r)].seed);
      cpu[size_t(r)] = sample_token(x, setup[size_t(r)].params, setup[size_t(r)].history, rng);
    }
  });

  // The batch.
  std::vector<float> temperature, top_p, min_p, rep, pres, freq, u32;
  std::vector<int32_t> top_k, offsets{0}, pen_tokens, pen_counts;
  for (int r = 0; r < rows; ++r) {
    const SamplingParams& p = setup[size_t(r)].params;
    temperature.push_back(p.temperature);
    top_k.push_back(p.top_k);
    top_p.push_back(p.top_p);
    min_p.push_back(p.min_p);
    rep.push_back(p.repetition_penalty);
    pres.push_back(p.presence_penalty);
    freq.push_back(p.frequency_penalty);
    u32.push_back(float(u[size_t(r)]));
    const TokenHistory& h = setup[size_t(r)].history;
    std::vector<int32_t> seen;
    for (int i = 0; i < vocab; ++i)
      if (h.seen[size_t(i)]) seen.push_back(i);
    std::shuffle(seen.begin(), seen.end(), g);
    for (int32_t t : seen) {
      pen_tokens.push_back(t);
      auto it = h.output_counts.find(t);
      pen_counts.push_back(it == h.output_counts.end() ? 0 : it->second);
    }
    offsets.push_back(int32_t(pen_tokens.size()));
  }
  const int64_t p_entries = int64_t(pen_tokens.size());
  const Shape rs{rows};
  DevBuf d_logits(logits, DType::kF32, {rows, vocab});
  DevBuf d_t(temperature, DType::kF32, rs), d_k(top_k, DType::kI32, rs);
  DevBuf d_tp(top_p, DType::kF32, rs), d_mp(min_p, DType::kF32, rs);
  DevBuf d_rep(rep, DType::kF32, rs), d_pres(pres, DType::kF32, rs), d_freq(freq, DType::kF32, rs);
  DevBuf d_u32(u32, DType::kF32, rs), d_u64(u, DType::kF64, rs);
  DevBuf d_off(offsets, DType::kI32, {rows + 1});
  DevBuf d_ptok(pen_tokens, DType::kI32, {p_entries}), d_pcnt(pen_counts, DType::kI32, {p_entries});
  // Outputs poisoned so that an unwritten entry cannot pass.
  DevBuf d_tokens(std::vector<int32_t>(size_t(rows), -7), DType::kI32, rs);
  DevBuf d_lp(std::vector<float>(size_t(rows), 1e30f), DType::kF32, rs);
  const size_t top_n = size_t(rows) * size_t(n_top);
  DevBuf d_top_ids(std::vector<int32_t>(top_n, -7), DType::kI32, {rows, n_top});
  DevBuf d_top_lp(std::vector<float>(top_n, 1e30f), DType::kF32, {rows, n_top});

  ops::SamplingBatch batch;
  batch.logits = d_logits.view();
  batch.temperature = d_t.view();
  batch.top_k = d_k.view();
  batch.top_p = d_tp.view();
  batch.min_p = d_mp.view();
  batch.repetition_penalty = d_rep.view();
  batch.presence_penalty = d_pres.view();
  batch.frequency_penalty = d_freq.view();
  batch.uniform = c.f64_uniform ? d_u64.view() : d_u32.view();
  batch.penalty_offsets = d_off.view();
  batch.penalty_tokens = d_ptok.view();
  batch.penalty_counts = d_pcnt.view();
  batch.any_penalty = any_penalty;
  batch.all_greedy = c.all_greedy_hint;
  batch.num_logprobs = n_top;
  ops::SamplingOutput out;
  out.tokens = d_tokens.view();
  out.logprob = d_lp.view();
  out.top_ids = d_top_ids.view();
  out.top_logprobs = d_top_lp.view();

  cuda::CudaBackend backend;
  ops::Context ctx{.device_backend = &backend};
  void* ws = nullptr;
  if (c.pass_workspace) {
    Result<size_t> bytes = cuda::CudaBackend::sample_workspace_bytes(rows, vocab, p_entries);
    ASSERT_TRUE(bytes.ok()) << bytes.status().message();
    ASSERT_EQ(cudaMalloc(&ws, *bytes), cudaSuccess);
    ctx.workspace = {ws, *bytes};
  }
  const Status st = backend.sample(ctx, batch, out);
  ASSERT_TRUE(st.ok()) << st.message();
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  if (ws != nullptr) cudaFree(ws);
  const auto tokens = d_tokens.download<int32_t>(size_t(rows));
  const auto lp = d_lp.download<float>(size_t(rows));
  const auto top_ids = d_top_ids.download<int32_t>(top_n);
  const auto top_lp = d_top_lp.download<float>(top_n);

  int boundary_rows = 0;
  for (int r = 0; r < rows; ++r) {
    SCOPED_TRACE("row " + std::to_string(r));
    const float* raw = logits.data() + size_t(r) * size_t(vocab);
    const SampleResult& want = cpu[size_t(r)];
    const int got = tokens[size_t(r)];
    ASSERT_GE(got, 0);
    ASSERT_LT(got, vocab);
    float want_lp = want.logprob;
    if (got != want.token) {
      const double gap = boundary_gap(raw, vocab, setup[size_t(r)], u[size_t(r)], got, want.token);
      EXPECT_LT(gap, kBoundaryMass) << "GPU token " << got << ", CPU token " << want.token;
      ++boundary_rows;
      want_lp = cpu_raw_logprobs(raw, vocab)[size_t(got)];
    }
    EXPECT_NEAR(lp[size_t(r)], want_lp, kLogprobTol);
    if (n_top == 0) continue;
    std::vector<float> raw_lp;
    for (int k = 0; k < n_top; ++k) {
      const size_t o = size_t(r) * size_t(n_top) + size_t(k);
      if (size_t(k) >= want.top.size()) {
        EXPECT_EQ(top_ids[o], -1) << "past the vocabulary, k " << k;
        continue;
      }
      EXPECT_NEAR(top_lp[o], want.top[size_t(k)].logprob, kLogprobTol) << "k " << k;
      if (top_ids[o] != want.top[size_t(k)].token) {
        if (raw_lp.empty()) raw_lp = cpu_raw_logprobs(raw, vocab);
        ASSERT_GE(top_ids[o], 0);
        ASSERT_LT(top_ids[o], vocab);
        EXPECT_NEAR(raw_lp[size_t(top_ids[o])], want.top[size_t(k)].logprob, 1e-6)
            << "k " << k << ": GPU id " << top_ids[o] << ", CPU id " << want.top[size_t(k)].token;
      }
    }
  }
  EXPECT_LE(boundary_rows, std::max(1, rows / 10));
  if (boundary_rows > 0)
    std::printf("[ %s ] %d of %d rows drew across a boundary within %.0e of u * total\n",
                c.name.c_str(), boundary_rows, rows, kBoundaryMass);
}

// Settings helpers.
auto greedy() {
  return [](int, std::mt19937_64&, SamplingParams& p) { p.temperature = 0.0f; };
}
float pick(std::mt19937_64& g, std::initializer_list<float> v) {
  return *(v.begin() + std::uniform_int_distribution<size_t>(0, v.size() - 1)(g));
}
void random_penalties(std::mt19937_64& g, SamplingParams& p) {
  p.repetition_penalty = pick(g, {1.0f, 0.7f, 1.3f, 2.0f});
  p.presence_penalty = pick(g, {0.0f, 0.5f, -1.0f, 1.5f});
  p.frequency_penalty = pick(g, {0.0f, 0.2f, -0.3f, 1.0f});
}

// ---- Greedy.

TEST(CudaSampling, GreedyFastPathTies) {
  SKIP_WITHOUT_GPU();
  for (int vocab : {kQwenVocab, 7, 4099}) {
    for (int rows : {1, 256}) {
      for (LogitKind kind : {LogitKind::kSpread, LogitKind::kQuantised}) {
        Case c;
        c.name = "greedy fast V" + std::to_string(vocab) + " R" + std::to_string(rows) +
                 (kind == LogitKind::kQuantised ? " quantised" : "");
        c.rows = rows;
        c.vocab = vocab;
        c.kind = kind;
        c.all_greedy_hint = true;
        c.settings = greedy();
        check_case(c);
      }
    }
  }
}

TEST(CudaSampling, GreedyFastPathDecodeBatch) {
  SKIP_WITHOUT_GPU();
  Case c;
  c.name = "greedy fast V151936 R512";
  c.rows = 512;
  c.all_greedy_hint = true;
  c.settings = greedy();
  check_case(c);
}

TEST(CudaSampling, GreedyWithLogprobsAndPenalties) {
  SKIP_WITHOUT_GPU();
  for (int vocab : {kQwenVocab, 7}) {
    for (int n_top : {1, 20}) {
      for (bool penalties : {false, true}) {
        Case c;
        c.name = "greedy general V" + std::to_string(vocab) + " N" + std::to_string(n_top) +
                 (penalties ? " penalties" : "");
        c.rows = 256;
        c.vocab = vocab;
        c.num_logprobs = n_top;
        c.kind = LogitKind::kQuantised;  // ties in the top logprobs too
        c.penalties = penalties;
        c.all_greedy_hint = true;
        c.settings = [penalties](int, std::mt19937_64& g, SamplingParams& p) {
          p.temperature = 0.0f;
          if (penalties) random_penalties(g, p);
        };
        check_case(c);
      }
    }
  }
}

// ---- Sampled rows.

TEST(CudaSampling, TemperatureOnly) {
  SKIP_WITHOUT_GPU();
  for (int vocab : {kQwenVocab, 7}) {
    for (int rows : {1, 256}) {
      Case c;
      c.name = "temperature V" + std::to_string(vocab) + " R" + std::to_string(rows);
      c.rows = rows;
      c.vocab = vocab;
      c.num_logprobs = rows == 1 ? 0 : 1;
      c.settings = [](int, std::mt19937_64& g, SamplingParams& p) {
        p.temperature = pick(g, {0.3f, 0.7f, 1.0f, 1.5f, 2.0f});
      };
      check_case(c);
    }
  }
}

TEST(CudaSampling, TopK) {
  SKIP_WITHOUT_GPU();
  for (int vocab : {kQwenVocab, 7}) {
    Case c;
    c.name = "top-k V" + std::to_string(vocab);
    c.rows = 256;
    c.vocab = vocab;
    c.settings = [vocab](int r, std::mt19937_64& g, SamplingParams& p) {
      const int ks[] = {1, 2, 5, 50, 1000, vocab, vocab + 5};
      p.top_k = ks[r % 7];
      p.temperature = pick(g, {0.5f, 1.0f, 1.5f});
    };
    check_case(c);
  }
}

TEST(CudaSampling, TopP) {
  SKIP_WITHOUT_GPU();
  for (int vocab : {kQwenVocab, 7}) {
    Case c;
    c.name = "top-p V" + std::to_string(vocab);
    c.rows = 256;
    c.vocab = vocab;
    c.settings = [](int, std::mt19937_64& g, SamplingParams& p) {
      p.top_p = pick(g, {0.05f, 0.3f, 0.8f, 0.95f, 0.999f});
      p.temperature = pick(g, {0.6f, 1.0f, 1.4f});
    };
    check_case(c);
  }
}

TEST(CudaSampling, MinP) {
  SKIP_WITHOUT_GPU();
  for (int vocab : {kQwenVocab, 7}) {
    Case c;
    c.name = "min-p V" + std::to_string(vocab);
    c.rows = 256;
    c.vocab = vocab;
    c.settings = [](int, std::mt19937_64& g, SamplingParams& p) {
      p.min_p = pick(g, {0.001f, 0.05f, 0.3f, 0.9f, 1.0f});
      p.temperature = pick(g, {0.6f, 1.0f, 1.4f});
    };
    check_case(c);
  }
}

TEST(CudaSampling, Penalties) {
  SKIP_WITHOUT_GPU();
  for (int vocab : {kQwenVocab, 7}) {
    Case c;
    c.name = "penalties V" + std::to_string(vocab);
    c.rows = 256;
    c.vocab = vocab;
    c.num_logprobs = 1;
    c.penalties = true;
    c.settings = [](int, std::mt19937_64& g, SamplingParams& p) {
      p.temperature = pick(g, {0.5f, 1.0f});
      random_penalties(g, p);
    };
    check_case(c);
  }
}

TEST(CudaSampling, AllCombined) {
  SKIP_WITHOUT_GPU();
  for (int vocab : {kQwenVocab, 7}) {
    for (int rows : {1, 256}) {
      Case c;
      c.name = "combined V" + std::to_string(vocab) + " R" + std::to_string(rows);
      c.rows = rows;
      c.vocab = vocab;
      c.num_logprobs = 20;
      c.penalties = true;
      c.settings = [](int, std::mt19937_64& g, SamplingParams& p) {
        p.temperature = pick(g, {0.7f, 1.0f, 1.3f});
        p.top_k = int(pick(g, {0.0f, 3.0f, 40.0f, 500.0f}));
        p.top_p = pick(g, {1.0f, 0.9f, 0.5f});
        p.min_p = pick(g, {0.0f, 0.05f, 0.2f});
        random_penalties(g, p);
      };
      check_case(c);
    }
  }
}

// Greedy and sampled rows in one batch, every setting random per row; f64 draws, the
// caller's workspace.
TEST(CudaSampling, MixedBatch) {
  SKIP_WITHOUT_GPU();
  for (int vocab : {kQwenVocab, 7}) {
    for (bool f64 : {false, true}) {
      Case c;
      c.name = "mixed V" + std::to_string(vocab) + (f64 ? " f64 u" : " f32 u");
      c.rows = 256;
      c.vocab = vocab;
      c.num_logprobs = 20;
      c.penalties = true;
      c.f64_uniform = f64;
      c.pass_workspace = f64;
      c.settings = [](int r, std::mt19937_64& g, SamplingParams& p) {
        p.temperature = r % 3 == 0 ? 0.0f : pick(g, {0.5f, 1.0f, 1.5f});
        p.top_k = int(pick(g, {0.0f, 1.0f, 20.0f}));
        p.top_p = pick(g, {1.0f, 0.7f});
        p.min_p = pick(g, {0.0f, 0.1f});
        random_penalties(g, p);
      };
      check_case(c);
    }
  }
}

// Quantised logits: many tokens of equal probability, so the sampler's id-ascending order
// among equals (the stable sort) decides the draw.
TEST(CudaSampling, EqualProbabilitiesFollowIdOrder) {
  SKIP_WITHOUT_GPU();
  for (int vocab : {kQwenVocab, 7}) {
    Case c;
    c.name = "quantised V" + std::to_string(vocab);
    c.rows = 256;
    c.vocab = vocab;
    c.num_logprobs = 20;
    c.kind = LogitKind::kQuantised;
    c.settings = [](int, std::mt19937_64& g, SamplingParams& p) {
      p.temperature = 1.0f;
      p.top_k = int(pick(g, {0.0f, 20.0f}));
    };
    check_case(c);
  }
}

// The decode shape: the fast greedy kernel and the general path (forced by one top logprob)
// agree on every token and logprob; both are timed (printed, for the record).
TEST(CudaSampling, FastAndGeneralGreedyAgreeAtDecodeShape) {
  SKIP_WITHOUT_GPU();
  const int rows = 512, vocab = kQwenVocab;
  const std::vector<float> logits = make_logits(rows, vocab, 99, LogitKind::kSpread);
  const Shape rs{rows};
  DevBuf d_logits(logits, DType::kF32, {rows, vocab});
  DevBuf d_t(std::vector<float>(size_t(rows), 0.0f), DType::kF32, rs);
  DevBuf d_k(std::vector<int32_t>(size_t(rows), 0), DType::kI32, rs);
  DevBuf d_one(std::vector<float>(size_t(rows), 1.0f), DType::kF32, rs);
  DevBuf d_zero(std::vector<float>(size_t(rows), 0.0f), DType::kF32, rs);
  DevBuf d_tok_a(std::vector<int32_t>(size_t(rows), -7), DType::kI32, rs);
  DevBuf d_tok_b(std::vector<int32_t>(size_t(rows), -7), DType::kI32, rs);
  DevBuf d_lp_a(std::vector<float>(size_t(rows), 1e30f), DType::kF32, rs);
  DevBuf d_lp_b(std::vector<float>(size_t(rows), 1e30f), DType::kF32, rs);
  DevBuf d_top_ids(std::vector<int32_t>(size_t(rows), -7), DType::kI32, {rows, 1});
  DevBuf d_top_lp(std::vector<float>(size_t(rows), 1e30f), DType::kF32, {rows, 1});
  ops::SamplingBatch b;
  b.logits = d_logits.view();
  b.temperature = d_t.view();
  b.top_k = d_k.view();
  b.top_p = b.repetition_penalty = d_one.view();
  b.min_p = b.presence_penalty = b.frequency_penalty = b.uniform = d_zero.view();
  b.all_greedy = true;
  ops::SamplingOutput fast;
  fast.tokens = d_tok_a.view();
  fast.logprob = d_lp_a.view();
  ops::SamplingBatch bg = b;
  bg.num_logprobs = 1;
  ops::SamplingOutput general;
  general.tokens = d_tok_b.view();
  general.logprob = d_lp_b.view();
  general.top_ids = d_top_ids.view();
  general.top_logprobs = d_top_lp.view();
  cuda::CudaBackend backend;
  const ops::Context ctx{.device_backend = &backend};
  cudaEvent_t e0, e1;
  ASSERT_EQ(cudaEventCreate(&e0), cudaSuccess);
  ASSERT_EQ(cudaEventCreate(&e1), cudaSuccess);
  auto time_us = [&](const ops::SamplingBatch& bb, const ops::SamplingOutput& oo) {
    EXPECT_TRUE(backend.sample(ctx, bb, oo).ok());  // warm-up (and the workspace)
    constexpr int kIters = 20;
    cudaEventRecord(e0);
    for (int i = 0; i < kIters; ++i) EXPECT_TRUE(backend.sample(ctx, bb, oo).ok());
    cudaEventRecord(e1);
    EXPECT_EQ(cudaEventSynchronize(e1), cudaSuccess);
    float ms = 0;
    cudaEventElapsedTime(&ms, e0, e1);
    return 1000.0 * ms / kIters;
  };
  const double fast_us = time_us(b, fast), general_us = time_us(bg, general);
  std::printf("[ greedy R%d V%d ] fast path %.1f us, general path (1 logprob) %.1f us\n", rows,
              vocab, fast_us, general_us);
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  const auto ta = d_tok_a.download<int32_t>(size_t(rows)), tb = d_tok_b.download<int32_t>(size_t(rows));
  const auto la = d_lp_a.download<float>(size_t(rows)), lb = d_lp_b.download<float>(size_t(rows));
  const auto top = d_top_ids.download<int32_t>(size_t(rows));
  for (int r = 0; r < rows; ++r) {
    EXPECT_EQ(ta[size_t(r)], tb[size_t(r)]) << "row " << r;
    EXPECT_EQ(top[size_t(r)], tb[size_t(r)]) << "row " << r;  // greedy = best raw logprob
    EXPECT_NEAR(la[size_t(r)], lb[size_t(r)], 1e-5) << "row " << r;
  }
}

// Sampled rows at the decode shape, timed (printed); judged like every other case.
TEST(CudaSampling, SampledDecodeShapeTimed) {
  SKIP_WITHOUT_GPU();
  const int rows = 256, vocab = kQwenVocab;
  const std::vector<float> logits = make_logits(rows, vocab, 7, LogitKind::kSpread);
  const Shape rs{rows};
  DevBuf d_logits(logits, DType::kF32, {rows, vocab});
  DevBuf d_t(std::vector<float>(size_t(rows), 0.8f), DType::kF32, rs);
  DevBuf d_k(std::vector<int32_t>(size_t(rows), 50), DType::kI32, rs);
  DevBuf d_tp(std::vector<float>(size_t(rows), 0.9f), DType::kF32, rs);
  DevBuf d_one(std::vector<float>(size_t(rows), 1.0f), DType::kF32, rs);
  DevBuf d_zero(std::vector<float>(size_t(rows), 0.0f), DType::kF32, rs);
  DevBuf d_u(std::vector<float>(size_t(rows), 0.5f), DType::kF32, rs);
  DevBuf d_tok(std::vector<int32_t>(size_t(rows), -7), DType::kI32, rs);
  DevBuf d_lp(std::vector<float>(size_t(rows), 1e30f), DType::kF32, rs);
  ops::SamplingBatch b;
  b.logits = d_logits.view();
  b.temperature = d_t.view();
  b.top_k = d_k.view();
  b.top_p = d_tp.view();
  b.repetition_penalty = d_one.view();
  b.min_p = b.presence_penalty = b.frequency_penalty = d_zero.view();
  b.uniform = d_u.view();
  ops::SamplingOutput o;
  o.tokens = d_tok.view();
  o.logprob = d_lp.view();
  cuda::CudaBackend backend;
  const ops::Context ctx{.device_backend = &backend};
  ASSERT_TRUE(backend.sample(ctx, b, o).ok());  // the workspace grows here
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  // Logits were overwritten: time on fresh copies.
  cudaEvent_t e0, e1;
  ASSERT_EQ(cudaEventCreate(&e0), cudaSuccess);
  ASSERT_EQ(cudaEventCreate(&e1), cudaSuccess);
  float total_ms = 0;
  constexpr int kIters = 5;
  for (int i = 0; i < kIters; ++i) {
    ASSERT_EQ(cudaMemcpy(b.logits.data, logits.data(), logits.size() * 4, cudaMemcpyHostToDevice),
              cudaSuccess);
    cudaEventRecord(e0);
    ASSERT_TRUE(backend.sample(ctx, b, o).ok());
    cudaEventRecord(e1);
    ASSERT_EQ(cudaEventSynchronize(e1), cudaSuccess);
    float ms = 0;
    cudaEventElapsedTime(&ms, e0, e1);
    total_ms += ms;
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  std::printf("[ sampled R%d V%d T0.8 k50 p0.9 ] %.1f us\n", rows, vocab,
              1000.0 * total_ms / kIters);
  const auto tok = d_tok.download<int32_t>(size_t(rows));
  const auto lp = d_lp.download<float>(size_t(rows));
  SamplingParams p;
  p.temperature = 0.8f;
  p.top_k = 50;
  p.top_p = 0.9f;
  p.logprobs = 0;
  TokenHistory h;
  h.reset(vocab, {});
  int boundary_rows = 0;
  for (int r = 0; r < rows; ++r) {
    // No RequestRng draws exactly 0.5: the CPU sampler's steps are redone for that u.
    const float* x = logits.data() + size_t(r) * size_t(vocab);
    RowSetup row;
    row.params = p;
    row.history = h;
    const int32_t want = cpu_draw(cpu_survivors(x, vocab, row), 0.5);
    const int32_t got = tok[size_t(r)];
    ASSERT_GE(got, 0);
    ASSERT_LT(got, vocab);
    if (got != want) {
      EXPECT_LT(boundary_gap(x, vocab, row, 0.5, got, want), kBoundaryMass) << "row " << r;
      ++boundary_rows;
    }
    EXPECT_NEAR(lp[size_t(r)], cpu_raw_logprobs(x, vocab)[size_t(got)], kLogprobTol)
        << "row " << r;
  }
  EXPECT_LE(boundary_rows, rows / 10);
}

// ---- Argument checks (no device needed: they fail before anything is launched).

TEST(CudaSampling, RejectsBadArguments) {
  const int rows = 4, vocab = 16;
  alignas(16) static unsigned char fake[1024];
  auto dev = [](DType t, const Shape& s) {
    return TensorView::contiguous(fake, t, s, Device::kCuda);
  };
  ops::SamplingBatch b;
  b.logits = dev(DType::kF32, {rows, vocab});
  b.temperature = b.top_p = b.min_p = b.repetition_penalty = b.presence_penalty =
      b.frequency_penalty = b.uniform = dev(DType::kF32, {rows});
  b.top_k = dev(DType::kI32, {rows});
  ops::SamplingOutput o;
  o.tokens = dev(DType::kI32, {rows});
  o.logprob = dev(DType::kF32, {rows});
  cuda::CudaBackend backend;
  const ops::Context ctx{.device_backend = &backend};
  auto expect_error = [&](const ops::SamplingBatch& bb, const ops::SamplingOutput& oo,
                          const char* what) {
    const Status st = backend.sample(ctx, bb, oo);
    EXPECT_FALSE(st.ok()) << what;
    EXPECT_NE(st.message().find("sample:"), std::string::npos) << st.message();
  };
  {
    ops::SamplingBatch bb = b;
    bb.logits.device = Device::kCpu;
    expect_error(bb, o, "CPU logits");
  }
  {
    ops::SamplingBatch bb = b;
    bb.logits.dtype = DType::kBF16;
    expect_error(bb, o, "bf16 logits");
  }
  {
    ops::SamplingBatch bb = b;
    bb.top_k = dev(DType::kF32, {rows});
    expect_error(bb, o, "f32 top_k");
  }
  {
    ops::SamplingBatch bb = b;
    bb.temperature = dev(DType::kF32, {rows + 1});
    expect_error(bb, o, "temperature of the wrong length");
  }
  {
    ops::SamplingBatch bb = b;
    bb.num_logprobs = 21;
    expect_error(bb, o, "21 logprobs");
  }
  {
    ops::SamplingBatch bb = b;
    bb.num_logprobs = 3;
    expect_error(bb, o, "top logprobs without outputs");
  }
  {
    ops::SamplingBatch bb = b;
    bb.any_penalty = true;
    expect_error(bb, o, "penalties without a CSR history");
  }
  {
    ops::SamplingOutput oo = o;
    oo.tokens = dev(DType::kI64, {rows});
    expect_error(b, oo, "i64 tokens");
  }
}

}  // namespace
}  // namespace moeopt

#endif  // MOEOPT_HAVE_CUDA
