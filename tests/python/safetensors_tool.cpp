// Test helper for tests/python/safetensors_crosscheck.py: exposes moeopt's safetensors
// reader and writers on the command line so the official Python `safetensors` package can
// check them (and be checked against them). Not installed; built only with the tests.
//
//   safetensors_tool write OUT.safetensors SPEC.json   one file, tensors filled by pattern()
//   safetensors_tool shard DIR MAX_BYTES SPEC.json     write_sharded_safetensors, same filling
//   safetensors_tool dump PATH                         Checkpoint::open(PATH) as JSON (hex data)
//   safetensors_tool check FILE...                     one line per file: "ok" or "error CODE MSG"
//   safetensors_tool write-big PATH BYTES              one U8 tensor "big" of BYTES bytes,
//                                                      byte i = (i * 131) % 251; prints peak RSS
//   safetensors_tool probe-big PATH                    opens it, checks bytes at 1000 spread
//                                                      positions; prints RssAnon
//
// SPEC.json: {"metadata": {k: v}, "tensors": [{"name": .., "dtype": "BF16", "shape": [..]}]}.
// Element i of the j-th tensor is pattern_value(i, j): the Python side computes the same
// values on its own and compares.
#include <cstdio>
#include <cstring>

#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "moeopt/core/file_io.h"
#include "moeopt/model/safetensors.h"

using namespace moeopt;
using nlohmann::json;

namespace {

// Small exact values: multiples of 1/4 in [-2, 2] for floats (exact in every float dtype,
// fp8 e4m3 included), integers in [-8, 8] ([0, 16] unsigned), alternating bools.
double pattern_value(int64_t i, size_t j, DType dt) {
  int64_t k = (i * 7 + int64_t(j) * 3) % 17;
  switch (dt) {
    case DType::kF32:
    case DType::kF16:
    case DType::kBF16:
    case DType::kF8E4M3:
    case DType::kF64: return double(k - 8) / 4.0;
    case DType::kI8:
    case DType::kI16:
    case DType::kI32:
    case DType::kI64: return double(k - 8);
    case DType::kU8: return double(k);
    case DType::kBool: return double((i + int64_t(j)) % 2);
  }
  return 0;
}

void store(uint8_t* out, DType dt, double v) {
  switch (dt) {
    case DType::kF32:
    case DType::kF16:
    case DType::kBF16:
    case DType::kF8E4M3: store_from_f32(out, dt, 0, float(v)); return;
    case DType::kF64: { double d = v; std::memcpy(out, &d, 8); return; }
    case DType::kI8: { int8_t x = int8_t(v); std::memcpy(out, &x, 1); return; }
    case DType::kU8: { uint8_t x = uint8_t(v); std::memcpy(out, &x, 1); return; }
    case DType::kI16: { int16_t x = int16_t(v); std::memcpy(out, &x, 2); return; }
    case DType::kI32: { int32_t x = int32_t(v); std::memcpy(out, &x, 4); return; }
    case DType::kI64: { int64_t x = int64_t(v); std::memcpy(out, &x, 8); return; }
    case DType::kBool: { uint8_t x = v != 0; std::memcpy(out, &x, 1); return; }
  }
}

int fail(const Status& st) {
  std::cerr << "safetensors_tool: error: " << st.message() << "\n";
  return 1;
}

Result<std::pair<std::vector<SafetensorsTensorSource>, std::map<std::string, std::string>>>
load_spec(const std::string& path) {
  MOEOPT_ASSIGN_OR_RETURN(std::string text, read_file(path));
  std::vector<SafetensorsTensorSource> out;
  std::map<std::string, std::string> meta;
  try {
    json spec = json::parse(text);
    if (spec.contains("metadata"))
      for (auto& [k, v] : spec["metadata"].items()) meta[k] = v.get<std::string>();
    size_t j = 0;
    for (const auto& t : spec.at("tensors")) {
      auto dt = dtype_from_safetensors(t.at("dtype").get<std::string>());
      if (!dt) return make_error(ErrorCode::kInvalidArgument, "{}: bad dtype", path);
      SafetensorsTensorSpec s{t.at("name").get<std::string>(), *dt,
                              t.at("shape").get<std::vector<int64_t>>()};
      const size_t esize = dtype_size(*dt);
      out.push_back({s, [j, dt = *dt, esize](uint64_t off, std::span<uint8_t> o) {
                       // Chunks may split elements: render element by element.
                       for (size_t b = 0; b < o.size();) {
                         uint64_t abs = off + b;
                         int64_t i = int64_t(abs / esize);
                         uint8_t elem[8];
                         store(elem, dt, pattern_value(i, j, dt));
                         for (size_t e = abs % esize; e < esize && b < o.size(); ++e) o[b++] = elem[e];
                       }
                       return Status::ok_status();
                     }});
      ++j;
    }
  } catch (const json::exception& e) {
    return make_error(ErrorCode::kInvalidArgument, "{}: {}", path, e.what());
  }
  return std::make_pair(std::move(out), std::move(meta));
}

std::string hex(std::span<const uint8_t> b) {
  static const char* d = "0123456789abcdef";
  std::string s;
  s.reserve(b.size() * 2);
  for (uint8_t x : b) {
    s.push_back(d[x >> 4]);
    s.push_back(d[x & 15]);
  }
  return s;
}

// Resident memory from /proc/self/status in KiB: `field` is "VmHWM" (peak RSS; the writer
// maps no file pages, so this is its peak working memory) or "RssAnon" (current heap/stack
// memory; for the mmap reader plain RSS would also count file pages the kernel can drop).
long status_kb(const char* field) {
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (!f) return -1;
  char line[256];
  long kb = -1;
  const size_t n = std::strlen(field);
  while (std::fgets(line, sizeof line, f))
    if (std::strncmp(line, field, n) == 0 && line[n] == ':') {
      kb = std::atol(line + n + 1);
      break;
    }
  std::fclose(f);
  return kb;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> a(argv + 1, argv + argc);
  if (a.size() == 3 && a[0] == "write") {
    auto spec = load_spec(a[2]);
    if (!spec.ok()) return fail(spec.status());
    // Odd chunk size so that fill callbacks see chunks splitting elements.
    Status st = write_safetensors(a[1], std::move(spec->first), spec->second, 13);
    return st.ok() ? 0 : fail(st);
  }
  if (a.size() == 4 && a[0] == "shard") {
    auto spec = load_spec(a[3]);
    if (!spec.ok()) return fail(spec.status());
    ShardedWriteOptions opt;
    opt.max_shard_bytes = std::stoull(a[2]);
    opt.metadata = spec->second;
    opt.chunk_bytes = 13;
    auto r = write_sharded_safetensors(a[1], std::move(spec->first), opt);
    return r.ok() ? 0 : fail(r.status());
  }
  if (a.size() == 2 && a[0] == "dump") {
    auto ck = Checkpoint::open(a[1]);
    if (!ck.ok()) return fail(ck.status());
    json out = {{"files", json::array()}, {"tensors", json::object()}, {"metadata", json::object()}};
    for (const auto& f : ck->files()) {
      out["files"].push_back(f.path());
      for (const auto& [k, v] : f.metadata()) out["metadata"][k] = v;
    }
    for (const auto& t : ck->tensors()) {
      const SafetensorsFile* f = ck->file_of(t.name);
      out["tensors"][t.name] = {{"dtype", dtype_to_safetensors(t.dtype)},
                                {"shape", t.shape},
                                {"hex", hex(f->bytes(t))},
                                {"aligned", t.aligned}};
    }
    std::cout << out.dump() << "\n";
    return 0;
  }
  if (a.size() == 3 && a[0] == "write-big") {
    const uint64_t n = std::stoull(a[2]);
    SafetensorsTensorSource big{{"big", DType::kU8, {int64_t(n)}},
                                [](uint64_t off, std::span<uint8_t> o) {
                                  for (size_t i = 0; i < o.size(); ++i) o[i] = uint8_t((off + i) * 131 % 251);
                                  return Status::ok_status();
                                }};
    Status st = write_safetensors(a[1], {big}, {{"format", "pt"}}, size_t(4) << 20);
    if (!st.ok()) return fail(st);
    std::cout << "peak_rss_kb " << status_kb("VmHWM") << "\n";
    return 0;
  }
  if (a.size() == 2 && a[0] == "probe-big") {
    auto f = SafetensorsFile::open(a[1]);
    if (!f.ok()) return fail(f.status());
    const auto* info = f->find("big");
    if (!info) return fail(make_error(ErrorCode::kNotFound, "no tensor 'big'"));
    auto bytes = f->bytes(*info);
    for (uint64_t k = 0; k < 1000; ++k) {
      uint64_t i = k * (bytes.size() - 1) / 999;
      if (bytes[i] != uint8_t(i * 131 % 251))
        return fail(make_error(ErrorCode::kCorruptData, "byte {} differs", i));
    }
    std::cout << "rss_anon_kb " << status_kb("RssAnon") << "\n";
    return 0;
  }
  if (!a.empty() && a[0] == "check") {
    for (size_t i = 1; i < a.size(); ++i) {
      auto f = SafetensorsFile::open(a[i]);
      if (f.ok()) std::cout << "ok\n";
      else std::cout << "error " << error_code_name(f.status().code()) << " " << f.status().message() << "\n";
    }
    return 0;
  }
  std::cerr << "usage: safetensors_tool write OUT SPEC | shard DIR MAX SPEC | dump PATH | check FILE...\n";
  return 2;
}
