// Expert placement from measured load (expert_placement.h).
#include "moeopt/parallel/expert_placement.h"

#include <algorithm>
#include <charconv>
#include <numeric>
#include <string_view>

namespace moeopt::parallel {
namespace {

constexpr std::string_view kMetric = "moeopt_expert_tokens_total{";

// `key="<digits>"` at the front of `s`; advances past it.
bool take_label(std::string_view& s, std::string_view key, int64_t* v) {
  if (s.substr(0, key.size()) != key || s.size() < key.size() + 2 || s[key.size()] != '=' ||
      s[key.size() + 1] != '"')
    return false;
  s.remove_prefix(key.size() + 2);
  const char* end = s.data() + s.size();
  auto [p, ec] = std::from_chars(s.data(), end, *v);
  if (ec != std::errc() || p == s.data() || p == end || *p != '"') return false;
  s.remove_prefix(size_t(p - s.data()) + 1);
  return true;
}

Status check_options(const std::vector<int64_t>& loads, const PlacementOptions& o) {
  const int64_t e = int64_t(loads.size());
  if (o.gpus < 1) return make_error(ErrorCode::kInvalidArgument, "placement: {} GPUs", o.gpus);
  if (e < o.gpus)
    return make_error(ErrorCode::kInvalidArgument, "placement: {} experts cannot fill {} GPUs", e, o.gpus);
  if (o.redundant < 0)
    return make_error(ErrorCode::kInvalidArgument, "placement: {} redundant slots", o.redundant);
  for (int64_t l : loads)
    if (l < 0) return make_error(ErrorCode::kInvalidArgument, "placement: a negative load ({})", l);
  return Status::ok_status();
}

void finish(LayerPlacement& p, const std::vector<int64_t>& loads) {
  const size_t g = p.gpu_experts.size();
  p.gpu_load.assign(g, 0.0);
  for (size_t i = 0; i < g; ++i)
    for (int32_t x : p.gpu_experts[i]) p.gpu_load[i] += double(loads[size_t(x)]) / double(p.copies[size_t(x)]);
  const double total = std::accumulate(p.gpu_load.begin(), p.gpu_load.end(), 0.0);
  const double most = *std::max_element(p.gpu_load.begin(), p.gpu_load.end());
  p.imbalance = total > 0 ? most / (total / double(g)) : 1.0;
}

}  // namespace

Result<ExpertLoad> parse_expert_load_metrics(const std::string& text, int64_t num_layers,
                                             int64_t num_experts) {
  if (num_layers < 1 || num_experts < 1)
    return make_error(ErrorCode::kInvalidArgument, "expert load: {} layers x {} experts", num_layers, num_experts);
  ExpertLoad out{num_layers, num_experts, std::vector<int64_t>(size_t(num_layers * num_experts), -1)};
  int64_t samples = 0, line_no = 0;
  std::string_view rest(text);
  while (!rest.empty()) {
    const size_t nl = rest.find('\n');
    std::string_view line = rest.substr(0, nl);
    rest = nl == std::string_view::npos ? std::string_view() : rest.substr(nl + 1);
    ++line_no;
    if (line.substr(0, kMetric.size()) != kMetric) continue;  // other metrics, comments
    std::string_view s = line.substr(kMetric.size());
    int64_t layer = 0, expert = 0, count = 0;
    bool ok = take_label(s, "layer", &layer) && !s.empty() && s[0] == ',';
    if (ok) s.remove_prefix(1);
    ok = ok && take_label(s, "expert", &expert) && s.size() >= 2 && s[0] == '}' && s[1] == ' ';
    if (ok) {
      s.remove_prefix(2);
      while (!s.empty() && (s.back() == '\r' || s.back() == ' ')) s.remove_suffix(1);
      auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), count);
      ok = ec == std::errc() && p == s.data() + s.size() && !s.empty();
    }
    if (!ok)
      return make_error(ErrorCode::kInvalidArgument, "expert load, line {}: not a moeopt_expert_tokens_total"
                        "{{layer=\"L\",expert=\"E\"}} COUNT sample", line_no);
    if (layer < 0 || layer >= num_layers || expert < 0 || expert >= num_experts)
      return make_error(ErrorCode::kInvalidArgument,
                        "expert load, line {}: layer {} expert {} is outside the model's {} x {}", line_no,
                        layer, expert, num_layers, num_experts);
    if (count < 0)
      return make_error(ErrorCode::kInvalidArgument, "expert load, line {}: a negative count", line_no);
    int64_t& slot = out.tokens[size_t(layer * num_experts + expert)];
    if (slot >= 0)
      return make_error(ErrorCode::kInvalidArgument, "expert load, line {}: layer {} expert {} given twice",
                        line_no, layer, expert);
    slot = count;
    ++samples;
  }
  if (samples == 0)
    return make_error(ErrorCode::kInvalidArgument,
                      "expert load: no moeopt_expert_tokens_total samples (a /metrics dump of `moeopt serve`)");
  for (int64_t& v : out.tokens) v = std::max<int64_t>(v, 0);  // experts never routed to: 0
  return out;
}

Result<LayerPlacement> baseline_placement(const std::vector<int64_t>& loads, const PlacementOptions& o) {
  MOEOPT_RETURN_IF_ERROR(check_options(loads, o));
  const int64_t e = int64_t(loads.size()), per = (e + o.gpus - 1) / o.gpus;
  LayerPlacement p;
  p.gpu_experts.resize(size_t(o.gpus));
  p.copies.assign(size_t(e), 1);
  for (int64_t x = 0; x < e; ++x) p.gpu_experts[size_t(x / per)].push_back(int32_t(x));
  finish(p, loads);
  return p;
}

Result<LayerPlacement> balanced_placement(const std::vector<int64_t>& loads, const PlacementOptions& o) {
  MOEOPT_RETURN_IF_ERROR(check_options(loads, o));
  const int64_t e = int64_t(loads.size()), g = o.gpus;
  const int64_t slots = (e + g - 1) / g + o.redundant;  // per GPU
  LayerPlacement p;
  p.copies.assign(size_t(e), 1);
  // 1. Replicas: the largest load per copy first; an expert has at most one copy per GPU.
  for (int64_t extra = slots * g - e; extra > 0; --extra) {
    int64_t best = -1;
    for (int64_t x = 0; x < e; ++x) {
      if (p.copies[size_t(x)] >= g || loads[size_t(x)] == 0) continue;
      // load_x / c_x > load_b / c_b, compared without division.
      if (best < 0 || loads[size_t(x)] * p.copies[size_t(best)] > loads[size_t(best)] * p.copies[size_t(x)])
        best = x;
    }
    if (best < 0) break;
    ++p.copies[size_t(best)];
  }
  // 2. Packing, longest first.
  struct Copy {
    int32_t expert, index;
    double load;
  };
  std::vector<Copy> order;
  for (int64_t x = 0; x < e; ++x)
    for (int32_t c = 0; c < p.copies[size_t(x)]; ++c)
      order.push_back({int32_t(x), c, double(loads[size_t(x)]) / double(p.copies[size_t(x)])});
  std::stable_sort(order.begin(), order.end(), [](const Copy& a, const Copy& b) { return a.load > b.load; });
  p.gpu_experts.assign(size_t(g), {});
  std::vector<double> load(size_t(g), 0.0);
  auto holds = [&](int64_t gpu, int32_t x) {
    const auto& v = p.gpu_experts[size_t(gpu)];
    return std::find(v.begin(), v.end(), x) != v.end();
  };
  for (const Copy& c : order) {
    int64_t best = -1;
    for (int64_t gpu = 0; gpu < g; ++gpu) {
      if (int64_t(p.gpu_experts[size_t(gpu)].size()) >= slots || holds(gpu, c.expert)) continue;
      if (best < 0 || load[size_t(gpu)] < load[size_t(best)]) best = gpu;
    }
    if (best < 0) {
      // Every GPU with a free slot already holds this expert: move a copy y from a GPU h
      // without this expert to the free GPU f (which must not hold y), and place it on h.
      int64_t f = -1;
      for (int64_t gpu = 0; gpu < g && f < 0; ++gpu)
        if (int64_t(p.gpu_experts[size_t(gpu)].size()) < slots) f = gpu;
      for (int64_t h = 0; h < g && best < 0 && f >= 0; ++h) {
        if (h == f || holds(h, c.expert)) continue;
        auto& v = p.gpu_experts[size_t(h)];
        for (size_t i = 0; i < v.size(); ++i) {
          const int32_t y = v[i];
          if (holds(f, y)) continue;
          const double ly = double(loads[size_t(y)]) / double(p.copies[size_t(y)]);
          p.gpu_experts[size_t(f)].push_back(y);
          load[size_t(f)] += ly;
          v.erase(v.begin() + std::ptrdiff_t(i));
          load[size_t(h)] -= ly;
          best = h;
          break;
        }
      }
      if (best < 0)
        return make_error(ErrorCode::kInternal, "placement: no GPU can take a copy of expert {}", c.expert);
    }
    p.gpu_experts[size_t(best)].push_back(c.expert);
    load[size_t(best)] += c.load;
  }
  for (auto& v : p.gpu_experts) std::sort(v.begin(), v.end());
  finish(p, loads);
  // Greedy packing can lose to a contiguous split that happens to be even (by a few percent
  // on near-uniform layers): keep whichever is better.
  MOEOPT_ASSIGN_OR_RETURN(LayerPlacement b, baseline_placement(loads, o));
  return b.imbalance < p.imbalance ? b : p;
}

}  // namespace moeopt::parallel
