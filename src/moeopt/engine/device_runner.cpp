// DeviceRunner (device_runner.h).
#include "moeopt/engine/device_runner.h"

#include <algorithm>
#include <unordered_map>

#include "moeopt/ops/device_backend.h"
#include "moeopt/ops/reduce.h"

namespace moeopt {
namespace {

constexpr int32_t kLadder[] = {1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 160, 192, 256, 320, 384, 448, 512};

bool is_plain_decode(const ForwardBatch& b) {
  if (b.num_tokens() != b.num_seqs() || int64_t(b.logits_rows.size()) != b.num_seqs()) return false;
  for (int32_t i = 0; i < b.num_seqs(); ++i)
    if (b.query_start_loc[size_t(i + 1)] - b.query_start_loc[size_t(i)] != 1 ||
        b.logits_rows[size_t(i)] != i)
      return false;
  return true;
}

bool has_penalty(const SamplingParams& p) {
  return p.repetition_penalty != 1.0f || p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f;
}

}  // namespace

DeviceRunner::DeviceRunner(Model& model, ops::DeviceBackend* backend, DeviceRunnerOptions o)
    : model_(model), backend_(backend), opt_(o) {}

DeviceRunner::~DeviceRunner() {
  if (stream_) backend_->synchronize(context());
  for (auto& [g, graph] : graphs_) backend_->destroy_graph(graph);
  kv_.reset();
  arena_.reset();
  if (stream_) backend_->destroy_stream(stream_);
}

ops::Context DeviceRunner::context() const {
  ops::Context ctx;
  ctx.stream = stream_;
  ctx.device_backend = backend_;
  ctx.arena = arena_.get();
  return ctx;
}

Result<std::unique_ptr<DeviceRunner>> DeviceRunner::create(Model& model, ops::DeviceBackend* backend,
                                                           const DeviceRunnerOptions& o) {
  if (!backend) return make_error(ErrorCode::kInvalidArgument, "device runner: no device backend");
  if (model.device() != Device::kCuda)
    return make_error(ErrorCode::kInvalidArgument, "device runner: the model's weights are not on the GPU");
  std::unique_ptr<DeviceRunner> r(new DeviceRunner(model, backend, o));
  MOEOPT_ASSIGN_OR_RETURN(r->stream_, backend->create_stream());
  r->arena_ = std::make_unique<ops::ScratchArena>(backend);
  MOEOPT_ASSIGN_OR_RETURN(r->kv_, KvCache::on_device(model.kv_layout(), o.num_blocks, o.block_size,
                                                     r->context(), o.kv_dtype));
  r->graph_blocks_per_seq_ = (o.max_model_len + o.block_size - 1) / o.block_size;
  const int32_t top = std::max(1, std::min(o.max_num_seqs, o.cuda_graph_max_batch));
  for (int32_t g : kLadder)
    if (g < top) r->ladder_.push_back(g);
  r->ladder_.push_back(top);
  if (o.cuda_graphs) MOEOPT_RETURN_IF_ERROR(r->capture_graphs());
  return r;
}

ForwardBatch DeviceRunner::padding_batch(int32_t g) const {
  ForwardBatch b;
  b.query_start_loc.push_back(0);
  b.max_blocks_per_seq = 0;
  pad_decode_batch(b, g);
  return b;
}

void DeviceRunner::pad_decode_batch(ForwardBatch& b, int32_t g) const {
  const int32_t s = b.num_seqs(), width = graph_blocks_per_seq_;
  std::vector<int32_t> table(size_t(g) * size_t(width), 0);
  for (int32_t i = 0; i < s; ++i)
    std::copy_n(b.block_table.begin() + int64_t(i) * b.max_blocks_per_seq,
                std::min(b.max_blocks_per_seq, width), table.begin() + int64_t(i) * width);
  b.block_table = std::move(table);
  b.max_blocks_per_seq = width;
  for (int32_t i = s; i < g; ++i) {
    b.token_ids.push_back(0);
    b.positions.push_back(0);
    b.slot_mapping.push_back(-1);  // no KV write
    b.query_start_loc.push_back(b.query_start_loc.back() + 1);
    b.context_lens.push_back(1);   // reads slot 0 of block 0: zeroed or any finite K/V
    b.logits_rows.push_back(i);
  }
  b.max_context_len_bound = opt_.max_model_len;
  b.max_query_len_bound = 1;
}

Status DeviceRunner::capture_graphs() {
  const ops::Context ctx = context();
  const int64_t vocab = model_.config().vocab_size;
  std::vector<int32_t> sizes(ladder_.rbegin(), ladder_.rend());
  for (int32_t g : sizes) {
    ForwardBatch b = padding_batch(g);
    for (int pass = 0; pass < 2; ++pass) {
      arena_->reset();
      MOEOPT_ASSIGN_OR_RETURN(TensorView logits, arena_->alloc(DType::kF32, {g, vocab}));
      MOEOPT_ASSIGN_OR_RETURN(BatchTensors t, model_.prepare(ctx, b));
      if (pass == 0) {
        // Eager warm-up: every lazily sized buffer reaches its size for g.
        MOEOPT_RETURN_IF_ERROR(model_.run(ctx, b, t, kv_->layers(), logits));
        MOEOPT_RETURN_IF_ERROR(backend_->synchronize(ctx));
        continue;
      }
      MOEOPT_RETURN_IF_ERROR(backend_->begin_capture(ctx));
      Status st = model_.run(ctx, b, t, kv_->layers(), logits);
      auto graph = backend_->end_capture(ctx);
      MOEOPT_RETURN_IF_ERROR(st.with_context(fmt::format("capturing the decode graph of batch {}", g)));
      MOEOPT_RETURN_IF_ERROR(graph.status());
      graphs_[g] = *graph;
    }
  }
  arena_->reset();
  return {};
}

Result<std::vector<SampleResult>> DeviceRunner::step(ForwardBatch& b,
                                                     const std::vector<Sequence*>& sampling) {
  const ops::Context ctx = context();
  arena_->reset();
  const int32_t s = b.num_seqs();
  void* graph = nullptr;
  // Steps that count routing copy it back per layer (not capturable): eager.
  if (!graphs_.empty() && is_plain_decode(b) && s <= ladder_.back() && !b.expert_token_counts) {
    const int32_t g = *std::lower_bound(ladder_.begin(), ladder_.end(), s);
    pad_decode_batch(b, g);
    graph = graphs_.at(g);
  }
  const int64_t rows = int64_t(b.logits_rows.size()), vocab = model_.config().vocab_size;
  MOEOPT_ASSIGN_OR_RETURN(TensorView logits, arena_->alloc(DType::kF32, {rows, vocab}));
  MOEOPT_ASSIGN_OR_RETURN(BatchTensors t, model_.prepare(ctx, b));
  if (graph) {
    MOEOPT_RETURN_IF_ERROR(backend_->launch_graph(ctx, graph));
  } else {
    MOEOPT_RETURN_IF_ERROR(model_.run(ctx, b, t, kv_->layers(), logits));
  }
  // Logits the requests asked for first: sampling may use the logits as scratch.
  for (size_t r = 0; r < sampling.size(); ++r) {
    Sequence& seq = *sampling[r];
    const void* row = logits.select0(int64_t(r)).data;
    const size_t row_bytes = size_t(vocab) * sizeof(float);
    if (seq.want_step_logits) {
      seq.step_logits.resize(size_t(vocab));
      MOEOPT_RETURN_IF_ERROR(backend_->copy_to_host(ctx, seq.step_logits.data(), row, row_bytes));
    }
    if (!seq.want_prompt_logits || seq.num_generated() != 0 || !seq.prompt_logits_last.empty()) continue;
    seq.prompt_logits_last.resize(size_t(vocab));
    MOEOPT_RETURN_IF_ERROR(backend_->copy_to_host(ctx, seq.prompt_logits_last.data(), row, row_bytes));
  }
  return sample(logits.slice0(0, int64_t(sampling.size())), sampling);
}

Result<std::vector<SampleResult>> DeviceRunner::sample(const TensorView& logits,
                                                       const std::vector<Sequence*>& sampling) {
  const ops::Context ctx = context();
  const int64_t r = int64_t(sampling.size());
  std::vector<SampleResult> out(static_cast<size_t>(r));
  if (r == 0) return out;
  bool plain_greedy = true, any_penalty = false, all_greedy = true;
  int num_logprobs = 0;
  for (Sequence* s : sampling) {
    const SamplingParams& p = s->params;
    all_greedy &= p.greedy();
    any_penalty |= has_penalty(p);
    num_logprobs = std::max(num_logprobs, p.logprobs);
    plain_greedy &= p.greedy() && !has_penalty(p) && p.logprobs < 0;
  }
  // logit_bias: the sampling kernels take no bias, so a row that has one makes a round trip
  // through the host (its unbiased copy stays here for the logprobs, which are those of the
  // raw distribution on either backend).
  const int64_t vocab = model_.config().vocab_size;
  const size_t row_bytes = size_t(vocab) * sizeof(float);
  std::vector<std::vector<float>> raw_rows(static_cast<size_t>(r));
  for (int64_t i = 0; i < r; ++i) {
    const SamplingParams& p = sampling[size_t(i)]->params;
    if (p.logit_bias.empty()) continue;
    void* row = logits.select0(i).data;
    std::vector<float>& raw = raw_rows[size_t(i)];
    raw.resize(size_t(vocab));
    MOEOPT_RETURN_IF_ERROR(backend_->copy_to_host(ctx, raw.data(), row, row_bytes));
    std::vector<float> biased = raw;
    apply_logit_bias(biased, p);
    MOEOPT_RETURN_IF_ERROR(backend_->copy_to_device(ctx, row, biased.data(), row_bytes));
  }
  std::vector<int32_t> tokens(static_cast<size_t>(r));
  if (plain_greedy) {
    MOEOPT_ASSIGN_OR_RETURN(TensorView ids, arena_->alloc(DType::kI32, {r}));
    MOEOPT_RETURN_IF_ERROR(ops::argmax(ctx, logits, ids));
    MOEOPT_RETURN_IF_ERROR(backend_->copy_to_host(ctx, tokens.data(), ids.data, tokens.size() * 4));
    for (int64_t i = 0; i < r; ++i) out[size_t(i)].token = tokens[size_t(i)];
    return out;
  }
  // Per-row settings and the penalty history (CSR), built here and copied up.
  std::vector<float> temperature, top_p, min_p, rep, presence, frequency;
  std::vector<double> uniform;  // f64: exactly the u the CPU sampler would draw
  std::vector<int32_t> top_k, offsets{0}, pen_tokens, pen_counts;
  for (Sequence* s : sampling) {
    const SamplingParams& p = s->params;
    temperature.push_back(p.temperature);
    top_k.push_back(p.top_k);
    top_p.push_back(p.top_p);
    min_p.push_back(p.min_p);
    rep.push_back(p.repetition_penalty);
    presence.push_back(p.presence_penalty);
    frequency.push_back(p.frequency_penalty);
    // One draw per non-greedy sample, as the CPU sampler makes (engine/sampler.cpp).
    uniform.push_back(p.greedy() ? 0.0 : s->rng.uniform());
    if (has_penalty(p)) {
      std::unordered_map<int32_t, int32_t> counts;  // token -> times generated
      for (int32_t i = 0; i < s->num_tokens(); ++i) {
        int32_t& c = counts[s->tokens[size_t(i)]];
        if (i >= s->prompt_len) ++c;
      }
      for (auto [tok, c] : counts) {
        pen_tokens.push_back(tok);
        pen_counts.push_back(c);
      }
    }
    offsets.push_back(int32_t(pen_tokens.size()));
  }
  auto upload = [&](const auto& v, DType dt) -> Result<TensorView> {
    MOEOPT_ASSIGN_OR_RETURN(TensorView t, arena_->alloc(dt, {std::max<int64_t>(1, int64_t(v.size()))}));
    if (v.size() != 0)
      MOEOPT_RETURN_IF_ERROR(
          backend_->copy_to_device(ctx, t.data, v.data(), v.size() * sizeof(v[0])));
    t.shape = Shape({int64_t(v.size())});
    return t;
  };
  ops::SamplingBatch sb;
  sb.logits = logits;
  MOEOPT_ASSIGN_OR_RETURN(sb.temperature, upload(temperature, DType::kF32));
  MOEOPT_ASSIGN_OR_RETURN(sb.top_k, upload(top_k, DType::kI32));
  MOEOPT_ASSIGN_OR_RETURN(sb.top_p, upload(top_p, DType::kF32));
  MOEOPT_ASSIGN_OR_RETURN(sb.min_p, upload(min_p, DType::kF32));
  MOEOPT_ASSIGN_OR_RETURN(sb.repetition_penalty, upload(rep, DType::kF32));
  MOEOPT_ASSIGN_OR_RETURN(sb.presence_penalty, upload(presence, DType::kF32));
  MOEOPT_ASSIGN_OR_RETURN(sb.frequency_penalty, upload(frequency, DType::kF32));
  MOEOPT_ASSIGN_OR_RETURN(sb.uniform, upload(uniform, DType::kF64));
  MOEOPT_ASSIGN_OR_RETURN(sb.penalty_offsets, upload(offsets, DType::kI32));
  MOEOPT_ASSIGN_OR_RETURN(sb.penalty_tokens, upload(pen_tokens, DType::kI32));
  MOEOPT_ASSIGN_OR_RETURN(sb.penalty_counts, upload(pen_counts, DType::kI32));
  sb.any_penalty = any_penalty;
  sb.all_greedy = all_greedy;
  sb.num_logprobs = num_logprobs;
  ops::SamplingOutput so;
  const int64_t n = std::max(1, num_logprobs);
  MOEOPT_ASSIGN_OR_RETURN(so.tokens, arena_->alloc(DType::kI32, {r}));
  MOEOPT_ASSIGN_OR_RETURN(so.logprob, arena_->alloc(DType::kF32, {r}));
  MOEOPT_ASSIGN_OR_RETURN(so.top_ids, arena_->alloc(DType::kI32, {r, n}));
  MOEOPT_ASSIGN_OR_RETURN(so.top_logprobs, arena_->alloc(DType::kF32, {r, n}));
  MOEOPT_RETURN_IF_ERROR(backend_->sample(ctx, sb, so));
  std::vector<float> logprob(static_cast<size_t>(r)), top_lp(static_cast<size_t>(r * n));
  std::vector<int32_t> top_ids(static_cast<size_t>(r * n));
  MOEOPT_RETURN_IF_ERROR(backend_->copy_to_host(ctx, tokens.data(), so.tokens.data, tokens.size() * 4));
  MOEOPT_RETURN_IF_ERROR(backend_->copy_to_host(ctx, logprob.data(), so.logprob.data, logprob.size() * 4));
  if (num_logprobs > 0) {
    MOEOPT_RETURN_IF_ERROR(backend_->copy_to_host(ctx, top_ids.data(), so.top_ids.data, top_ids.size() * 4));
    MOEOPT_RETURN_IF_ERROR(backend_->copy_to_host(ctx, top_lp.data(), so.top_logprobs.data, top_lp.size() * 4));
  }
  for (int64_t i = 0; i < r; ++i) {
    SampleResult& res = out[size_t(i)];
    res.token = tokens[size_t(i)];
    res.logprob = logprob[size_t(i)];
    const int want = sampling[size_t(i)]->params.logprobs;
    if (want >= 0 && !raw_rows[size_t(i)].empty()) {
      fill_logprobs(raw_rows[size_t(i)], want, res);
      continue;
    }
    for (int j = 0; j < want && j < num_logprobs; ++j)
      res.top.push_back({top_ids[size_t(i * n + j)], top_lp[size_t(i * n + j)]});
  }
  return out;
}

}  // namespace moeopt
