#include "moeopt/engine/engine.h"

#include <algorithm>
#include <map>

#include "moeopt/core/logging.h"
#include "moeopt/ops/scratch.h"

namespace moeopt {

Result<std::unique_ptr<Engine>> Engine::create(std::unique_ptr<Model> model, EngineOptions opt) {
  if (opt.block_size <= 0) return make_error(ErrorCode::kInvalidArgument, "block_size must be > 0");
  if (opt.max_num_seqs <= 0) return make_error(ErrorCode::kInvalidArgument, "max_num_seqs must be > 0");
  if (opt.max_num_batched_tokens <= 0)
    return make_error(ErrorCode::kInvalidArgument, "max_num_batched_tokens must be > 0");
  std::unique_ptr<Engine> e(new Engine());
  const ModelConfig& c = model->config();
  e->max_model_len_ = opt.max_model_len > 0 ? opt.max_model_len : int32_t(c.max_position_embeddings);
  if (!opt.enable_chunked_prefill && opt.max_num_batched_tokens < e->max_model_len_)
    return make_error(ErrorCode::kInvalidArgument,
                      "without chunked prefill max_num_batched_tokens ({}) must be >= max_model_len ({})",
                      opt.max_num_batched_tokens, e->max_model_len_);
  const bool on_device = opt.device != nullptr;
  if (on_device != (model->device() == Device::kCuda))
    return make_error(ErrorCode::kInvalidArgument, "{}",
                      on_device ? "the engine was given a GPU backend but the model is on the CPU"
                                : "the model is on the GPU but the engine has no device backend");
  if (opt.fp8_kv_cache && model->kv_layout().latent)
    return make_error(ErrorCode::kUnsupported,
                      "fp8_kv_cache: the MLA latent cache ({}) has no fp8 form yet", c.model_type);
  const DType kv_dtype =
      opt.fp8_kv_cache ? DType::kF8E4M3 : on_device ? DType::kBF16 : DType::kF32;
  int32_t blocks = opt.num_kv_blocks;
  if (blocks <= 0)
    blocks = int32_t(std::max<size_t>(
        1, opt.kv_cache_bytes / KvCache::bytes_per_block(model->kv_layout(), opt.block_size, kv_dtype)));
  e->pool_ = std::make_unique<ThreadPool>(on_device ? 1 : opt.num_threads);
  e->blocks_ = std::make_unique<BlockAllocator>(blocks);
  if (on_device) {
    DeviceRunnerOptions ro;
    ro.num_blocks = blocks;
    ro.block_size = opt.block_size;
    ro.max_num_seqs = opt.max_num_seqs;
    ro.max_model_len = e->max_model_len_;
    ro.cuda_graphs = opt.cuda_graphs && opt.cuda_graph_max_batch > 0;
    ro.cuda_graph_max_batch = opt.cuda_graph_max_batch;
    ro.kv_dtype = kv_dtype;
    MOEOPT_ASSIGN_OR_RETURN(e->runner_, DeviceRunner::create(*model, opt.device, ro));
  } else {
    e->kv_ = std::make_unique<KvCache>(model->kv_layout(), blocks, opt.block_size, kv_dtype);
    e->arena_ = std::make_unique<ops::ScratchArena>(nullptr, size_t(1) << 20);
  }
  e->scheduler_ = std::make_unique<Scheduler>(
      SchedulerOptions{opt.max_num_seqs, opt.max_num_batched_tokens, opt.block_size,
                       opt.enable_prefix_caching, opt.enable_chunked_prefill,
                       opt.prefill_first},
      e->blocks_.get());
  for (int64_t id : c.eos_token_ids) e->eos_ids_.push_back(int32_t(id));
  if (c.is_moe()) e->expert_tokens_.assign(size_t(c.num_hidden_layers * c.num_experts), 0);
  e->count_expert_tokens_ = opt.device == nullptr;
  e->model_ = std::move(model);
  e->opt_ = opt;
  return e;
}

DType Engine::kv_dtype() const {
  return opt_.fp8_kv_cache ? DType::kF8E4M3 : runner_ ? DType::kBF16 : DType::kF32;
}

Result<uint64_t> Engine::add_request(Request r) {
  MOEOPT_ASSIGN_OR_RETURN(std::vector<uint64_t> ids, add_samples(std::move(r), 1));
  return ids.front();
}

Result<std::vector<uint64_t>> Engine::add_samples(Request r, int32_t n) {
  const ModelConfig& c = model_->config();
  if (n < 1 || n > kMaxSamplesPerRequest)
    return make_error(ErrorCode::kInvalidArgument, "n must be in [1, {}], got {}", kMaxSamplesPerRequest, n);
  if (r.prompt.empty()) return make_error(ErrorCode::kInvalidArgument, "prompt is empty");
  for (int32_t t : r.prompt)
    if (t < 0 || t >= c.vocab_size)
      return make_error(ErrorCode::kInvalidArgument, "prompt token id {} is outside the vocabulary [0, {})",
                        t, c.vocab_size);
  if (int64_t(r.prompt.size()) >= max_model_len_)
    return make_error(ErrorCode::kInvalidArgument,
                      "prompt has {} tokens, the model's context is {} (no room to generate)",
                      r.prompt.size(), max_model_len_);
  MOEOPT_RETURN_IF_ERROR(r.params.validate(c.vocab_size));
  // The whole sequence (prompt + max_tokens, capped by the context) must fit the pool on
  // its own, or it would end up preempting itself forever.
  int64_t longest = std::min<int64_t>(int64_t(r.prompt.size()) + std::max(1, r.params.max_tokens), max_model_len_);
  int64_t needed_blocks = (longest + opt_.block_size - 1) / opt_.block_size;
  if (needed_blocks > blocks_->num_blocks())
    return make_error(ErrorCode::kResourceExhausted,
                      "prompt + max_tokens need {} KV blocks, the cache has {} in all", needed_blocks,
                      blocks_->num_blocks());
  std::vector<uint64_t> ids;
  std::unique_ptr<Sequence> first;
  for (int32_t i = 0; i < n; ++i) {
    SamplingParams p = r.params;
    if (p.seed) p.seed = *p.seed + uint64_t(i);  // wraps around at 2^64
    auto seq = std::make_unique<Sequence>(next_id_++, r.prompt, std::move(p), c.vocab_size);
    seq->want_prompt_logits = r.want_prompt_logits;
    seq->want_step_logits = r.want_step_logits;
    ids.push_back(seq->id);
    if (first)
      first->forks.push_back(std::move(seq));
    else
      first = std::move(seq);
  }
  scheduler_->add(std::move(first));
  return ids;
}

FinishReason Engine::check_stop(const Sequence& s, int32_t token) const {
  if (!s.params.ignore_eos && std::find(eos_ids_.begin(), eos_ids_.end(), token) != eos_ids_.end())
    return FinishReason::kStop;
  const auto& stops = s.params.stop_token_ids;
  if (std::find(stops.begin(), stops.end(), token) != stops.end()) return FinishReason::kStop;
  if (s.num_generated() >= s.params.max_tokens) return FinishReason::kLength;
  if (s.num_tokens() >= max_model_len_) return FinishReason::kLength;
  return FinishReason::kNone;
}

Result<std::vector<RequestOutput>> Engine::step() {
  std::vector<RequestOutput> outputs;
  auto emit_finished = [&] {
    for (auto& s : scheduler_->take_finished()) {
      // Aborted sequences report once; those finished by sampling already did.
      if (s->finish != FinishReason::kAbort) continue;
      RequestOutput o;
      o.id = s->id;
      o.finished = true;
      o.finish_reason = s->finish;
      o.prompt_tokens = s->prompt_len;
      o.generated_tokens = s->num_generated();
      o.cached_prompt_tokens = s->cached_prompt_tokens;
      o.first_scheduled = s->first_scheduled;
      outputs.push_back(std::move(o));
    }
  };
  emit_finished();
  std::vector<ScheduledSeq> work = scheduler_->schedule();
  if (work.empty()) return outputs;
  ++steps_;

  // Build the batch. A sequence samples this step when its scheduled tokens reach the end
  // of everything it has (prompt fully prefilled, or a decode step).
  ForwardBatch b;
  int32_t max_blocks = 0;
  for (const ScheduledSeq& w : work) max_blocks = std::max(max_blocks, int32_t(w.seq->blocks.size()));
  b.max_blocks_per_seq = max_blocks;
  b.query_start_loc.push_back(0);
  std::vector<Sequence*> sampling;
  const auto step_start = std::chrono::steady_clock::now();
  for (const ScheduledSeq& w : work) {
    Sequence& s = *w.seq;
    if (!s.first_scheduled) s.first_scheduled = step_start;
    for (int32_t i = 0; i < w.num_new_tokens; ++i) {
      int32_t pos = s.num_computed + i;
      b.token_ids.push_back(s.tokens[size_t(pos)]);
      b.positions.push_back(pos);
      b.slot_mapping.push_back(s.blocks[size_t(pos / opt_.block_size)] * opt_.block_size +
                               pos % opt_.block_size);
    }
    b.query_start_loc.push_back(b.num_tokens());
    b.context_lens.push_back(s.num_computed + w.num_new_tokens);
    for (int32_t j = 0; j < max_blocks; ++j)
      b.block_table.push_back(j < int32_t(s.blocks.size()) ? s.blocks[size_t(j)] : 0);
    if (s.num_computed + w.num_new_tokens == s.num_tokens()) {
      b.logits_rows.push_back(b.num_tokens() - 1);
      sampling.push_back(&s);
    }
  }
  const int64_t V = model_->config().vocab_size;
  if (!expert_tokens_.empty() && count_expert_tokens_) b.expert_token_counts = expert_tokens_.data();
  std::vector<SampleResult> device_samples;
  HostTensor logits;
  if (runner_) {
    MOEOPT_ASSIGN_OR_RETURN(device_samples, runner_->step(b, sampling));
  } else {
    logits = HostTensor(DType::kF32, {int64_t(b.logits_rows.size()), V});
    ops::Context ctx;
    ctx.pool = pool_.get();
    arena_->reset();
    ctx.arena = arena_.get();
    MOEOPT_RETURN_IF_ERROR(model_->forward(ctx, b, kv_->layers(), logits.view()));
  }
  for (const ScheduledSeq& w : work) {
    w.seq->num_computed += w.num_new_tokens;
    scheduler_->register_computed_blocks(*w.seq);
    scheduler_->release_forks(*w.seq);  // before a first token can end it and free its blocks
  }

  for (size_t r = 0; r < sampling.size(); ++r) {
    Sequence& s = *sampling[r];
    RequestOutput o;
    o.id = s.id;
    SampleResult sr;
    if (runner_) {
      // The runner filled prompt_logits_last on the first token and step_logits when asked.
      if (s.want_prompt_logits && s.num_generated() == 0) o.prompt_logits_last = s.prompt_logits_last;
      if (s.want_step_logits) o.logits = std::move(s.step_logits);
      sr = std::move(device_samples[r]);
    } else {
      std::span<float> row(logits.ptr<float>() + r * size_t(V), size_t(V));
      if (s.want_prompt_logits && s.num_generated() == 0 && s.prompt_logits_last.empty()) {
        s.prompt_logits_last.assign(row.begin(), row.end());
        o.prompt_logits_last = s.prompt_logits_last;
      }
      if (s.want_step_logits) o.logits.assign(row.begin(), row.end());  // before sampling edits it
      sr = sample_token(row, s.params, s.history, s.rng);
    }
    s.tokens.push_back(sr.token);
    s.history.add_output(sr.token);
    o.new_tokens.push_back(sr.token);
    o.samples.push_back(std::move(sr));
    s.finish = check_stop(s, o.new_tokens.back());
    o.finished = s.finished();
    o.finish_reason = s.finish;
    o.prompt_tokens = s.prompt_len;
    o.generated_tokens = s.num_generated();
    o.cached_prompt_tokens = s.cached_prompt_tokens;
    o.first_scheduled = s.first_scheduled;
    outputs.push_back(std::move(o));
  }
  scheduler_->take_finished();  // frees blocks of sequences that just finished
  return outputs;
}

Result<std::vector<Completion>> run_to_completion(Engine& engine, std::vector<Request> requests) {
  std::map<uint64_t, size_t> index;
  std::vector<Completion> out(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    MOEOPT_ASSIGN_OR_RETURN(uint64_t id, engine.add_request(std::move(requests[i])));
    index[id] = i;
  }
  while (engine.has_unfinished()) {
    MOEOPT_ASSIGN_OR_RETURN(auto outs, engine.step());
    for (auto& o : outs) {
      auto it = index.find(o.id);
      if (it == index.end()) continue;
      Completion& c = out[it->second];
      c.tokens.insert(c.tokens.end(), o.new_tokens.begin(), o.new_tokens.end());
      for (auto& s : o.samples) c.samples.push_back(std::move(s));
      if (!o.prompt_logits_last.empty()) c.prompt_logits_last = std::move(o.prompt_logits_last);
      if (o.finished) c.finish_reason = o.finish_reason;
    }
  }
  return out;
}

}  // namespace moeopt
