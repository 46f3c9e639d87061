// Parsing and validation of the (untrusted) safetensors header; see safetensors.h for the
// file layout and the list of checks.
//
// The checks follow the official Rust crate (safetensors/src/tensor.rs, `read_metadata` and
// `Metadata::validate`):
//   - buffer shorter than 8 bytes                    -> HeaderTooSmall
//   - N > 100'000'000                                -> HeaderTooLarge
//   - 8 + N > file size                              -> InvalidHeaderLength
//   - header not UTF-8 JSON                          -> InvalidHeader / ...Deserialization
//     (the crate's "must start with '{'" check is commented out, so leading whitespace is
//     accepted here too)
//   - JSON not matching {__metadata__: {str: str} or null, name: {dtype, shape,
//     data_offsets: [begin, end]}}                   -> InvalidHeaderDeserialization
//   - tensors sorted by (begin, end): each must start where the previous one ended (so
//     the first starts at 0, no overlap, no hole) and have begin <= end -> InvalidOffset
//   - numel or numel * dtype size overflows          -> ValidationOverflow
//   - end - begin != numel * dtype size              -> TensorInvalidInfo
//   - last end + 8 + N != file size (trailing bytes) -> MetadataIncompleteBuffer
// Like the crate, unknown fields inside a tensor entry are ignored. Stricter than the crate:
// a duplicated key is always an error (the crate rejects duplicated fields inside an entry
// but silently keeps the last of duplicated tensor names or metadata keys), as is nesting
// deeper than a valid header needs (a guard against pathological inputs), and dtypes the
// format defines but DType lacks (F8_E5M2, U16, ...) are kUnsupported.
#include <algorithm>
#include <cstring>
#include <limits>
#include <unordered_set>
#include <vector>

#include <nlohmann/json.hpp>

#include "moeopt/model/safetensors.h"

namespace moeopt {
namespace {

using nlohmann::json;

// A valid header nests root object > tensor entry > shape array (3 levels); allow one more
// level for unknown extra fields, refuse anything deeper.
constexpr int kMaxJsonDepth = 4;

// Makes untrusted text safe for a one-line message: control bytes (and, unless
// keep_utf8, all non-ASCII bytes, as parse errors may quote invalid UTF-8) become \xNN.
std::string printable(std::string_view text, bool keep_utf8) {
  std::string out;
  out.reserve(text.size());
  for (unsigned char c : text) {
    if (c < 0x20 || c == 0x7f || (c >= 0x80 && !keep_utf8))
      out += fmt::format("\\x{:02x}", c);
    else
      out.push_back(char(c));
  }
  return out;
}

// A JSON value for an error message, cut to a readable length (a shape can be megabytes).
std::string brief(const json& v) {
  std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  if (s.size() > 64) s = s.substr(0, 60) + "...";
  return printable(s, true);
}

// Thrown from the parser callback (and caught right around the parse call) to stop parsing
// with a specific message.
struct JsonReject {
  std::string message;
};

// Parses `text` into `out` rejecting duplicate object keys and deep nesting. Returns an
// empty string on success, else the reason.
std::string parse_json_strict(std::string_view text, json& out) {
  std::vector<std::unordered_set<std::string>> keys_stack;  // keys seen per open object
  int depth = 0;
  auto cb = [&](int /*depth*/, json::parse_event_t event, json& parsed) -> bool {
    switch (event) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        if (++depth > kMaxJsonDepth)
          throw JsonReject{fmt::format("nested deeper than {} levels", kMaxJsonDepth)};
        if (event == json::parse_event_t::object_start) keys_stack.emplace_back();
        break;
      case json::parse_event_t::object_end:
        --depth;
        if (!keys_stack.empty()) keys_stack.pop_back();
        break;
      case json::parse_event_t::array_end:
        --depth;
        break;
      case json::parse_event_t::key:
        if (!keys_stack.empty() &&
            !keys_stack.back().insert(parsed.get_ref<const std::string&>()).second)
          throw JsonReject{fmt::format("duplicate key '{}'",
                                       printable(parsed.get_ref<const std::string&>(), true))};
        break;
      case json::parse_event_t::value:
        break;
    }
    return true;
  };
  try {
    out = json::parse(text.begin(), text.end(), cb, /*allow_exceptions=*/true,
                      /*ignore_comments=*/false);
  } catch (const JsonReject& r) {
    return r.message;
  } catch (const json::exception& e) {
    // "[json.exception.parse_error.101] parse error at ..." -> "parse error at ..."
    std::string what = e.what();
    auto close = what.find("] ");
    return printable(close == std::string::npos ? what : what.substr(close + 2), false);
  }
  return "";
}

uint64_t read_le_u64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// dtype names the safetensors format defines that moeopt cannot represent.
bool is_known_unsupported_dtype(std::string_view n) {
  static constexpr std::string_view kNames[] = {"F8_E5M2", "U16", "U32", "U64", "F4",
                                                "F6_E2M3", "F6_E3M2", "E8M0", "F8_E8M0",
                                                "C64", "F8_E4M3FNUZ", "F8_E5M2FNUZ"};
  for (auto k : kNames)
    if (k == n) return true;
  return false;
}

// Reads a JSON non-negative integer that fits in int64 (shape dims, offsets).
bool as_u63(const json& v, uint64_t& out) {
  if (!v.is_number_unsigned()) return false;
  uint64_t x = v.get<uint64_t>();
  if (x > uint64_t(std::numeric_limits<int64_t>::max())) return false;
  out = x;
  return true;
}

Status corrupt_tensor(const std::string& source, const std::string& name,
                      const std::string& what) {
  return Status(ErrorCode::kCorruptData,
                fmt::format("{}: tensor '{}': {}", source, printable(name, true), what));
}

Status parse_tensor_entry(const std::string& source, const std::string& name, const json& e,
                          uint64_t data_bytes, SafetensorsTensorInfo& info) {
  if (!e.is_object()) return corrupt_tensor(source, name, "entry is not a JSON object");
  info.name = name;
  info.file = source;

  auto it = e.find("dtype");
  if (it == e.end()) return corrupt_tensor(source, name, "missing field 'dtype'");
  if (!it->is_string()) return corrupt_tensor(source, name, "'dtype' is not a string");
  const std::string& dname = it->get_ref<const std::string&>();
  auto dt = dtype_from_safetensors(dname);
  if (!dt) {
    if (is_known_unsupported_dtype(dname))
      return Status(ErrorCode::kUnsupported,
                    fmt::format("{}: tensor '{}': dtype {} is not supported by moeopt", source,
                                printable(name, true), dname));
    return corrupt_tensor(source, name,
                          fmt::format("unknown dtype '{}'", printable(dname, true)));
  }
  info.dtype = *dt;

  it = e.find("shape");
  if (it == e.end()) return corrupt_tensor(source, name, "missing field 'shape'");
  if (!it->is_array()) return corrupt_tensor(source, name, "'shape' is not an array");
  uint64_t numel = 1;
  info.shape.clear();
  info.shape.reserve(it->size());
  for (const auto& d : *it) {
    uint64_t dim = 0;
    if (!as_u63(d, dim))
      return corrupt_tensor(source, name,
                            fmt::format("shape {} has an entry that is not a non-negative integer",
                                        brief(*it)));
    if (__builtin_mul_overflow(numel, dim, &numel) ||
        numel > uint64_t(std::numeric_limits<int64_t>::max()))
      return corrupt_tensor(source, name,
                            fmt::format("shape {} overflows the element count", brief(*it)));
    info.shape.push_back(int64_t(dim));
  }
  uint64_t nbytes = 0;
  if (__builtin_mul_overflow(numel, uint64_t(dtype_size(info.dtype)), &nbytes))
    return corrupt_tensor(source, name,
                          fmt::format("shape {} overflows the byte size", brief(*it)));

  it = e.find("data_offsets");
  if (it == e.end()) return corrupt_tensor(source, name, "missing field 'data_offsets'");
  uint64_t begin = 0, end = 0;
  if (!it->is_array() || it->size() != 2 || !as_u63((*it)[0], begin) || !as_u63((*it)[1], end))
    return corrupt_tensor(source, name,
                          fmt::format("'data_offsets' {} is not [begin, end] of non-negative "
                                      "integers",
                                      brief(*it)));
  if (begin > end)
    return corrupt_tensor(source, name,
                          fmt::format("data_offsets [{}, {}] end before begin", begin, end));
  if (end > data_bytes)
    return corrupt_tensor(source, name,
                          fmt::format("data_offsets [{}, {}] run past the data section ({} bytes)",
                                      begin, end, data_bytes));
  if (end - begin != nbytes)
    return corrupt_tensor(source, name,
                          fmt::format("data_offsets [{}, {}] hold {} bytes but {} {} needs {}",
                                      begin, end, end - begin, dname, brief(e.at("shape")),
                                      nbytes));
  info.data_begin = begin;
  info.data_end = end;
  info.nbytes = nbytes;
  return Status::ok_status();
}

}  // namespace

int64_t SafetensorsTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

Result<SafetensorsHeader> parse_safetensors_header(const uint8_t* data, size_t size,
                                                   const std::string& source) {
  if (size < 8)
    return make_error(ErrorCode::kCorruptData,
                      "{}: file is {} bytes, too short for the 8-byte header length", source,
                      size);
  SafetensorsHeader h;
  const uint64_t n = read_le_u64(data);
  if (n > kSafetensorsMaxHeaderBytes)
    return make_error(ErrorCode::kCorruptData,
                      "{}: header length {} exceeds the {}-byte limit", source, n,
                      kSafetensorsMaxHeaderBytes);
  if (n > uint64_t(size) - 8)
    return make_error(ErrorCode::kCorruptData,
                      "{}: header length {} runs past the end of the file ({} bytes)", source, n,
                      size);
  h.header_bytes = n;
  h.data_offset = 8 + n;
  h.data_bytes = uint64_t(size) - h.data_offset;

  // Like the reference (whose "must start with '{'" check is still commented out), leading
  // JSON whitespace is accepted; anything but an object is rejected below.
  std::string_view text(reinterpret_cast<const char*>(data + 8), size_t(n));
  json root;
  std::string err = parse_json_strict(text, root);
  if (!err.empty())
    return make_error(ErrorCode::kCorruptData, "{}: header is not valid JSON: {}", source, err);
  if (!root.is_object())
    return make_error(ErrorCode::kCorruptData, "{}: header is not a JSON object", source);

  h.tensors.reserve(root.size());
  for (auto it = root.begin(); it != root.end(); ++it) {
    const std::string& key = it.key();
    if (key == "__metadata__") {
      if (it->is_null()) continue;  // an Option in the reference: null means absent
      if (!it->is_object())
        return make_error(ErrorCode::kCorruptData, "{}: '__metadata__' is not a JSON object",
                          source);
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string())
          return make_error(ErrorCode::kCorruptData,
                            "{}: '__metadata__' value of '{}' is not a string", source,
                            printable(m.key(), true));
        h.metadata.emplace(m.key(), m->get<std::string>());
      }
      continue;
    }
    SafetensorsTensorInfo info;
    MOEOPT_RETURN_IF_ERROR(parse_tensor_entry(source, key, *it, h.data_bytes, info));
    h.tensors.push_back(std::move(info));
  }

  // The tensors must tile the data section: sorted by offset, each starts where the
  // previous one ended. Ties (zero-size tensors) are ordered by name for determinism.
  std::sort(h.tensors.begin(), h.tensors.end(), [](const auto& a, const auto& b) {
    if (a.data_begin != b.data_begin) return a.data_begin < b.data_begin;
    if (a.data_end != b.data_end) return a.data_end < b.data_end;
    return a.name < b.name;
  });
  uint64_t expected = 0;
  const SafetensorsTensorInfo* prev = nullptr;
  for (auto& t : h.tensors) {
    if (t.data_begin < expected)
      return corrupt_tensor(source, t.name,
                            fmt::format("data_offsets [{}, {}] overlap tensor '{}' [{}, {}]",
                                        t.data_begin, t.data_end, prev->name, prev->data_begin,
                                        prev->data_end));
    if (t.data_begin > expected)
      return corrupt_tensor(source, t.name,
                            fmt::format("data_offsets [{}, {}] leave a hole of {} bytes at "
                                        "offset {} (tensors must be contiguous)",
                                        t.data_begin, t.data_end, t.data_begin - expected,
                                        expected));
    expected = t.data_end;
    prev = &t;
    t.file_offset = h.data_offset + t.data_begin;
    t.aligned = t.file_offset % dtype_size(t.dtype) == 0;
  }
  if (expected != h.data_bytes)
    return make_error(ErrorCode::kCorruptData,
                      "{}: tensors cover {} bytes but the data section has {} ({} unaccounted "
                      "bytes at the end of the file)",
                      source, expected, h.data_bytes, h.data_bytes - expected);
  return h;
}

}  // namespace moeopt
