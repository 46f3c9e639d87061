// safetensors reader/writer: reference byte vectors from the official Rust crate's tests,
// writer -> reader round trips for every dtype, streaming and sharded writes, a table of
// malformed headers each with its specific error, index (sharded checkpoint) checks, and
// the fuzz corpus replayed through the header parser (fuzz/corpus/safetensors_header).
//
// Run: ctest --test-dir build -L model -R Safetensors   (or build/tests/test_model)
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "../../fuzz/safetensors_header_fuzz.h"
#include "../../fuzz/safetensors_index_fuzz.h"
#include "moeopt/core/file_io.h"
#include "moeopt/model/safetensors.h"

namespace moeopt {
namespace {

namespace fs = std::filesystem;

// A fresh empty directory under the build tree, unique per test.
fs::path temp_dir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  fs::path d = fs::path(MOEOPT_BINARY_DIR) / "test_tmp" /
               (std::string(info->test_suite_name()) + "." + info->name());
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::string slurp(const fs::path& p) {
  auto r = read_file(p.string());
  EXPECT_TRUE(r.ok()) << r.status().message();
  return r.ok() ? *r : std::string();
}

void spit(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}

// 8-byte little-endian length + header + `data_bytes` zero bytes.
std::string make_file(const std::string& header, size_t data_bytes = 0) {
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = char(uint8_t(n >> (8 * i)));
  return out + header + std::string(data_bytes, '\0');
}

Result<SafetensorsHeader> parse(const std::string& bytes, const std::string& source = "t.st") {
  return parse_safetensors_header(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(),
                                  source);
}

std::string bytes_of(std::initializer_list<int> v) {
  std::string s;
  for (int b : v) s.push_back(char(uint8_t(b)));
  return s;
}

// --- reference vectors ---------------------------------------------------------------------
// Serialized outputs listed in the official safetensors Rust crate's unit tests
// (safetensors/src/tensor.rs: test_serialization, test_empty).

const std::string kRustAttn0 = bytes_of(
    {64,  0,   0,   0,   0,   0,   0,   0,   123, 34,  97,  116, 116, 110, 46,  48,  34,  58,
     123, 34,  100, 116, 121, 112, 101, 34,  58,  34,  70,  51,  50,  34,  44,  34,  115, 104,
     97,  112, 101, 34,  58,  91,  49,  44,  50,  44,  51,  93,  44,  34,  100, 97,  116, 97,
     95,  111, 102, 102, 115, 101, 116, 115, 34,  58,  91,  48,  44,  50,  52,  93,  125, 125,
     0,   0,   0,   0,   0,   0,   128, 63,  0,   0,   0,   64,  0,   0,   64,  64,  0,   0,
     128, 64,  0,   0,   160, 64});
const std::string kRustEmpty = bytes_of({8, 0, 0, 0, 0, 0, 0, 0, 123, 125, 32, 32, 32, 32, 32, 32});
const std::string kRustEmptyWithMetadata = bytes_of(
    {40,  0,   0,   0,   0,   0,   0,   0,  123, 34,  95,  95,  109, 101, 116, 97,
     100, 97,  116, 97,  95,  95,  34,  58, 123, 34,  102, 114, 97,  109, 101, 119,
     111, 114, 107, 34,  58,  34,  112, 116, 34,  125, 125, 32,  32,  32,  32,  32});

TEST(Safetensors, ParsesReferenceVectors) {
  auto h = parse(kRustAttn0);
  ASSERT_TRUE(h.ok()) << h.status().message();
  ASSERT_EQ(h->tensors.size(), 1u);
  const auto& t = h->tensors[0];
  EXPECT_EQ(t.name, "attn.0");
  EXPECT_EQ(t.dtype, DType::kF32);
  EXPECT_EQ(t.shape, (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(t.nbytes, 24u);
  EXPECT_EQ(h->data_offset, 72u);
  float v[6];
  std::memcpy(v, kRustAttn0.data() + t.file_offset, 24);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(v[i], float(i));

  auto e = parse(kRustEmpty);
  ASSERT_TRUE(e.ok()) << e.status().message();
  EXPECT_TRUE(e->tensors.empty());
  auto m = parse(kRustEmptyWithMetadata);
  ASSERT_TRUE(m.ok()) << m.status().message();
  EXPECT_EQ(m->metadata.at("framework"), "pt");
}

TEST(Safetensors, WriterMatchesReferenceBytes) {
  fs::path d = temp_dir();
  {
    auto w = SafetensorsWriter::create((d / "a.safetensors").string(),
                                       {{"attn.0", DType::kF32, {1, 2, 3}}});
    ASSERT_TRUE(w.ok()) << w.status().message();
    float v[6] = {0, 1, 2, 3, 4, 5};
    ASSERT_TRUE(w->write_tensor("attn.0", v, sizeof v).ok());
    ASSERT_TRUE(w->finish().ok());
    EXPECT_EQ(slurp(d / "a.safetensors"), kRustAttn0);
  }
  {
    auto w = SafetensorsWriter::create((d / "e.safetensors").string(), {});
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE(w->finish().ok());
    EXPECT_EQ(slurp(d / "e.safetensors"), kRustEmpty);
  }
  {
    auto w = SafetensorsWriter::create((d / "m.safetensors").string(), {}, {{"framework", "pt"}});
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE(w->finish().ok());
    EXPECT_EQ(slurp(d / "m.safetensors"), kRustEmptyWithMetadata);
  }
}

// --- files written by the reference library ---------------------------------------------
// tests/data/safetensors was produced by the official Python package and huggingface_hub's
// shard splitter (tests/python/make_safetensors_reference.py); the expected values follow
// the formula documented there.

TEST(Safetensors, ReadsFilesWrittenByReferenceLibrary) {
  fs::path data = fs::path(MOEOPT_SOURCE_DIR) / "tests" / "data" / "safetensors";
  auto f = SafetensorsFile::open((data / "reference_all_dtypes.safetensors").string());
  ASSERT_TRUE(f.ok()) << f.status().message();
  EXPECT_EQ(f->metadata().at("format"), "pt");
  // Same order as DTYPES in tests/python/safetensors_crosscheck.py: j is the position.
  const char* names[] = {"F64", "F32", "F16", "BF16", "F8_E4M3", "I64",
                         "I32", "I16", "I8",  "U8",   "BOOL"};
  ASSERT_EQ(f->tensors().size(), std::size(names));
  for (size_t j = 0; j < std::size(names); ++j) {
    SCOPED_TRACE(names[j]);
    auto v = f->view(std::string("t.") + names[j]);
    ASSERT_TRUE(v.ok()) << v.status().message();
    EXPECT_EQ(v->dtype, *dtype_from_safetensors(names[j]));
    EXPECT_EQ(v->shape, (Shape{3, 5}));
    EXPECT_EQ(reinterpret_cast<uintptr_t>(v->data) % dtype_size(v->dtype), 0u);
    for (int64_t i = 0; i < 15; ++i) {
      int64_t k = (i * 7 + int64_t(j) * 3) % 17;
      float want;
      if (dtype_is_float(v->dtype) || v->dtype == DType::kF64) want = float(k - 8) / 4.0f;
      else if (v->dtype == DType::kU8) want = float(k);
      else if (v->dtype == DType::kBool) want = float((i + int64_t(j)) % 2);
      else want = float(k - 8);
      ASSERT_EQ(load_as_f32(v->data, v->dtype, i), want) << "element " << i;
    }
  }

  auto ck = Checkpoint::open((data / "sharded").string());
  ASSERT_TRUE(ck.ok()) << ck.status().message();
  EXPECT_EQ(ck->files().size(), 4u);
  EXPECT_EQ(ck->tensors().size(), 7u);
  EXPECT_EQ(ck->total_bytes(), 700u);
  EXPECT_EQ(ck->index_metadata().at("total_size"), "700");
  for (int k = 0; k < 7; ++k) {
    auto v = ck->view("w." + std::to_string(k));
    ASSERT_TRUE(v.ok());
    for (int i = 0; i < 100; ++i) ASSERT_EQ(v->ptr<uint8_t>()[i], uint8_t((k * 31 + i) % 256));
  }
  EXPECT_EQ(fs::path(ck->find("w.6")->file).filename(), "model-00004-of-00004.safetensors");
}

// --- round trips ---------------------------------------------------------------------------

const DType kAllDTypes[] = {DType::kF32, DType::kF16, DType::kBF16, DType::kF8E4M3,
                            DType::kF64, DType::kI8,  DType::kU8,   DType::kI16,
                            DType::kI32, DType::kI64, DType::kBool};

// Deterministic pseudo-random bytes for a tensor (valid for every dtype; bools get 0/1).
std::vector<uint8_t> pattern(DType dt, size_t nbytes, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(nbytes);
  for (auto& b : v) b = uint8_t(rng());
  if (dt == DType::kBool)
    for (auto& b : v) b &= 1;
  return v;
}

TEST(Safetensors, RoundTripEveryDType) {
  fs::path d = temp_dir();
  std::vector<SafetensorsTensorSpec> specs;
  std::vector<std::vector<uint8_t>> data;
  uint32_t seed = 1;
  for (DType dt : kAllDTypes) {
    // Odd sizes so that, unsorted, later tensors would be misaligned.
    SafetensorsTensorSpec s{std::string("t.") + dtype_name(dt), dt, {3, 5}};
    specs.push_back(s);
    data.push_back(pattern(dt, s.nbytes(), seed++));
  }
  specs.push_back({"scalar", DType::kF32, {}});
  data.push_back(pattern(DType::kF32, 4, 99));
  specs.push_back({"empty", DType::kBF16, {0, 7}});
  data.push_back({});

  std::vector<SafetensorsTensorSource> sources;
  for (size_t i = 0; i < specs.size(); ++i) {
    const auto* bytes = &data[i];
    sources.push_back({specs[i], [bytes](uint64_t off, std::span<uint8_t> out) {
                         std::memcpy(out.data(), bytes->data() + off, out.size());
                         return Status::ok_status();
                       }});
  }
  std::string path = (d / "all.safetensors").string();
  ASSERT_TRUE(write_safetensors(path, sources, {{"format", "pt"}}, /*chunk_bytes=*/7).ok());

  auto f = SafetensorsFile::open(path);
  ASSERT_TRUE(f.ok()) << f.status().message();
  EXPECT_EQ(f->metadata().at("format"), "pt");
  ASSERT_EQ(f->tensors().size(), specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    SCOPED_TRACE(specs[i].name);
    const auto* info = f->find(specs[i].name);
    ASSERT_NE(info, nullptr);
    EXPECT_EQ(info->dtype, specs[i].dtype);
    EXPECT_EQ(info->shape, specs[i].shape);
    EXPECT_EQ(info->nbytes, data[i].size());
    EXPECT_EQ(info->file, path);
    EXPECT_TRUE(info->aligned);
    auto v = f->view(specs[i].name);
    ASSERT_TRUE(v.ok());
    EXPECT_EQ(v->dtype, specs[i].dtype);
    EXPECT_EQ(v->shape.vec(), specs[i].shape);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(v->data) % dtype_size(specs[i].dtype), 0u);
    if (!data[i].empty()) {
      EXPECT_EQ(std::memcmp(v->data, data[i].data(), data[i].size()), 0);
    }
  }
  EXPECT_EQ(f->view("scalar")->ndim(), 0);
  EXPECT_EQ(f->view("nope").status().code(), ErrorCode::kNotFound);
}

TEST(Safetensors, StreamingWriterPiecesAndErrors) {
  fs::path d = temp_dir();
  std::string path = (d / "s.safetensors").string();
  std::vector<float> a(10), b(3);
  for (int i = 0; i < 10; ++i) a[i] = float(i) * 0.5f;
  for (int i = 0; i < 3; ++i) b[i] = -float(i);
  {
    auto w = SafetensorsWriter::create(path, {{"a", DType::kF32, {10}}, {"z", DType::kF32, {0}},
                                              {"b", DType::kF32, {3}}});
    ASSERT_TRUE(w.ok());
    // a and b written as one stream cut at odd places; the empty z is skipped.
    std::vector<uint8_t> all(52);
    std::memcpy(all.data(), a.data(), 40);
    std::memcpy(all.data() + 40, b.data(), 12);
    ASSERT_TRUE(w->write(all.data(), 3).ok());
    ASSERT_TRUE(w->write(all.data() + 3, 40).ok());
    EXPECT_EQ(w->current_tensor(), 2u);
    ASSERT_TRUE(w->write(all.data() + 43, 9).ok());
    Status extra = w->write(all.data(), 1);
    EXPECT_EQ(extra.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(extra.message().find("past the last declared tensor"), std::string::npos);
    ASSERT_TRUE(w->finish().ok());
  }
  auto f = SafetensorsFile::open(path);
  ASSERT_TRUE(f.ok()) << f.status().message();
  EXPECT_EQ(std::memcmp(f->view("a")->data, a.data(), 40), 0);
  EXPECT_EQ(std::memcmp(f->view("b")->data, b.data(), 12), 0);
  EXPECT_EQ(f->find("z")->nbytes, 0u);

  // Unfinished writers leave nothing behind; finish() reports the missing bytes.
  std::string p2 = (d / "partial.safetensors").string();
  {
    auto w = SafetensorsWriter::create(p2, {{"a", DType::kF32, {10}}});
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE(w->write(a.data(), 8).ok());
    Status st = w->finish();
    EXPECT_EQ(st.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(st.message().find("tensor 'a' has 8 of 40 bytes"), std::string::npos) << st.message();
  }
  EXPECT_FALSE(fs::exists(p2));
  EXPECT_FALSE(fs::exists(p2 + ".tmp"));

  // Declaration errors.
  auto dup = SafetensorsWriter::create(p2, {{"a", DType::kF32, {1}}, {"a", DType::kF32, {1}}});
  EXPECT_NE(dup.status().message().find("declared twice"), std::string::npos);
  auto neg = SafetensorsWriter::create(p2, {{"a", DType::kF32, {-1}}});
  EXPECT_NE(neg.status().message().find("negative dimension"), std::string::npos);
  auto meta = SafetensorsWriter::create(p2, {{"__metadata__", DType::kF32, {1}}});
  EXPECT_FALSE(meta.ok());
  auto w = SafetensorsWriter::create(p2, {{"a", DType::kF32, {1}}, {"b", DType::kF32, {1}}});
  ASSERT_TRUE(w.ok());
  float one = 1;
  EXPECT_NE(w->write_tensor("b", &one, 4).message().find("out of order"), std::string::npos);
  EXPECT_NE(w->write_tensor("a", &one, 2).message().find("declared 4"), std::string::npos);
}

TEST(Safetensors, FillCallbackSeesIncreasingChunks) {
  fs::path d = temp_dir();
  std::vector<std::pair<uint64_t, size_t>> calls;
  SafetensorsTensorSource src{{"x", DType::kI32, {25}},
                              [&](uint64_t off, std::span<uint8_t> out) {
                                calls.emplace_back(off, out.size());
                                for (size_t i = 0; i < out.size(); ++i) out[i] = uint8_t(off + i);
                                return Status::ok_status();
                              }};
  std::string path = (d / "x.safetensors").string();
  ASSERT_TRUE(write_safetensors(path, {src}, {}, /*chunk_bytes=*/32).ok());
  ASSERT_EQ(calls.size(), 4u);  // 100 bytes in chunks of 32
  EXPECT_EQ(calls[0], (std::pair<uint64_t, size_t>{0, 32}));
  EXPECT_EQ(calls[3], (std::pair<uint64_t, size_t>{96, 4}));
  auto f = SafetensorsFile::open(path);
  ASSERT_TRUE(f.ok());
  auto bytes = f->bytes(*f->find("x"));
  for (size_t i = 0; i < bytes.size(); ++i) ASSERT_EQ(bytes[i], uint8_t(i));

  // Chunk sizes are rounded to whole elements (multiples of 8 bytes).
  std::vector<std::pair<uint64_t, size_t>> f64_calls;
  SafetensorsTensorSource f64{{"d", DType::kF64, {5}}, [&](uint64_t off, std::span<uint8_t> out) {
                                f64_calls.emplace_back(off, out.size());
                                std::memset(out.data(), 0, out.size());
                                return Status::ok_status();
                              }};
  ASSERT_TRUE(write_safetensors((d / "d.safetensors").string(), {f64}, {}, 13).ok());
  ASSERT_EQ(f64_calls.size(), 5u);
  for (const auto& [off, n] : f64_calls) EXPECT_EQ(off % 8 + n % 8, 0u);

  // A failing fill aborts the write with its message and leaves no file.
  SafetensorsTensorSource bad{{"y", DType::kU8, {4}}, [](uint64_t, std::span<uint8_t>) {
                                return make_error(ErrorCode::kInternal, "generator broke");
                              }};
  Status st = write_safetensors((d / "y.safetensors").string(), {bad});
  EXPECT_NE(st.message().find("generator broke"), std::string::npos);
  EXPECT_NE(st.message().find("'y'"), std::string::npos);
  EXPECT_FALSE(fs::exists(d / "y.safetensors"));
}

// --- sharded checkpoints -------------------------------------------------------------------

std::vector<SafetensorsTensorSource> u8_tensors(const std::vector<std::pair<std::string, int64_t>>& v) {
  std::vector<SafetensorsTensorSource> out;
  for (const auto& [name, n] : v) {
    uint8_t tag = uint8_t(name.size() * 7 + n);
    out.push_back({{name, DType::kU8, {n}}, [tag](uint64_t off, std::span<uint8_t> o) {
                     for (size_t i = 0; i < o.size(); ++i) o[i] = uint8_t(tag + off + i);
                     return Status::ok_status();
                   }});
  }
  return out;
}

TEST(Safetensors, ShardedWriteAndRead) {
  fs::path d = temp_dir();
  // Limit 100: [60] [50 30] [150 alone, appended when seen] ... per huggingface_hub's rule:
  // a=60 -> cur{a}; b=50 -> 110>100, close {a}, cur{b}; big=150 -> own shard {big};
  // c=30 -> cur{b,c}=80; e=20 -> 100 (not > 100) cur{b,c,e}; close.
  auto tensors = u8_tensors({{"a", 60}, {"b", 50}, {"big", 150}, {"c", 30}, {"e", 20}});
  ShardedWriteOptions opt;
  opt.max_shard_bytes = 100;
  auto r = write_sharded_safetensors(d.string(), tensors, opt);
  ASSERT_TRUE(r.ok()) << r.status().message();
  ASSERT_EQ(r->files.size(), 3u);
  EXPECT_EQ(r->files[0], "model-00001-of-00003.safetensors");
  EXPECT_EQ(r->index_file, "model.safetensors.index.json");
  EXPECT_EQ(r->total_bytes, 310u);

  auto idx = read_file((d / "model.safetensors.index.json").string());
  ASSERT_TRUE(idx.ok());
  EXPECT_NE(idx->find("\"total_size\": 310"), std::string::npos) << *idx;
  EXPECT_NE(idx->find("\"big\": \"model-00002-of-00003.safetensors\""), std::string::npos);
  EXPECT_NE(idx->find("\"e\": \"model-00003-of-00003.safetensors\""), std::string::npos);

  for (std::string path : {d.string(), (d / "model.safetensors.index.json").string()}) {
    auto ck = Checkpoint::open(path);
    ASSERT_TRUE(ck.ok()) << ck.status().message();
    EXPECT_EQ(ck->files().size(), 3u);
    EXPECT_EQ(ck->tensors().size(), 5u);
    EXPECT_EQ(ck->total_bytes(), 310u);
    EXPECT_EQ(ck->index_metadata().at("total_size"), "310");
    const auto* info = ck->find("c");
    ASSERT_NE(info, nullptr);
    EXPECT_EQ(fs::path(info->file).filename(), "model-00003-of-00003.safetensors");
    EXPECT_EQ(ck->file_of("a")->path(), (d / "model-00001-of-00003.safetensors").string());
    auto v = ck->view("big");
    ASSERT_TRUE(v.ok());
    const uint8_t tag = uint8_t(3 * 7 + 150);
    for (int i = 0; i < 150; ++i) ASSERT_EQ(v->ptr<uint8_t>()[i], uint8_t(tag + i));
    EXPECT_EQ(ck->view("missing").status().code(), ErrorCode::kNotFound);
  }

  // Everything fits: a single model.safetensors and the stale index is gone.
  opt.max_shard_bytes = 1000;
  auto r1 = write_sharded_safetensors(d.string(), u8_tensors({{"a", 60}, {"b", 50}}), opt);
  ASSERT_TRUE(r1.ok());
  EXPECT_EQ(r1->files, std::vector<std::string>{"model.safetensors"});
  EXPECT_TRUE(r1->index_file.empty());
  EXPECT_FALSE(fs::exists(d / "model.safetensors.index.json"));
  auto ck = Checkpoint::open(d.string());
  ASSERT_TRUE(ck.ok()) << ck.status().message();
  EXPECT_EQ(ck->tensors().size(), 2u);
  EXPECT_EQ(ck->files().size(), 1u);
}

TEST(Safetensors, DirectoryOfLooseFiles) {
  fs::path d = temp_dir();
  ASSERT_TRUE(write_safetensors((d / "x.safetensors").string(), u8_tensors({{"a", 3}})).ok());
  ASSERT_TRUE(write_safetensors((d / "y.safetensors").string(), u8_tensors({{"b", 4}})).ok());
  auto ck = Checkpoint::open(d.string());
  ASSERT_TRUE(ck.ok()) << ck.status().message();
  EXPECT_EQ(ck->tensors().size(), 2u);
  ASSERT_TRUE(write_safetensors((d / "z.safetensors").string(), u8_tensors({{"a", 3}})).ok());
  auto dup = Checkpoint::open(d.string());
  ASSERT_FALSE(dup.ok());
  EXPECT_NE(dup.status().message().find("tensor 'a' is in both"), std::string::npos)
      << dup.status().message();
  EXPECT_EQ(Checkpoint::open((d / "none").string()).status().code(), ErrorCode::kNotFound);
  fs::create_directories(d / "empty");
  EXPECT_EQ(Checkpoint::open((d / "empty").string()).status().code(), ErrorCode::kNotFound);
}

struct IndexCase {
  const char* label;
  std::string weight_map;  // JSON object text
  const char* expect;      // substring of the error
};

TEST(Safetensors, IndexChecks) {
  fs::path d = temp_dir();
  ASSERT_TRUE(write_safetensors((d / "s1.safetensors").string(), u8_tensors({{"a", 3}, {"b", 2}})).ok());
  ASSERT_TRUE(write_safetensors((d / "s2.safetensors").string(), u8_tensors({{"c", 4}})).ok());
  spit(d.parent_path() / "outside.safetensors", slurp(d / "s2.safetensors"));
  const std::vector<IndexCase> cases = {
      {"traversal", R"({"a":"s1.safetensors","b":"s1.safetensors","c":"../outside.safetensors"})",
       "is not a file name in the index's directory"},
      {"absolute", R"({"a":"/etc/passwd"})", "is not a file name"},
      {"missing shard", R"({"a":"s1.safetensors","b":"s1.safetensors","c":"s3.safetensors"})",
       "does not exist"},
      {"tensor not in shard", R"({"a":"s1.safetensors","b":"s1.safetensors","c":"s2.safetensors","q":"s2.safetensors"})",
       "tensor 'q' is listed in the weight_map for s2.safetensors but that shard lacks it"},
      {"unlisted tensor", R"({"a":"s1.safetensors","c":"s2.safetensors"})",
       "shard s1.safetensors holds tensor 'b' that the weight_map does not list"},
      {"wrong shard", R"({"a":"s1.safetensors","b":"s2.safetensors","c":"s2.safetensors"})",
       "tensor 'b' is in shard s1.safetensors but the weight_map assigns it to s2.safetensors"},
      {"non-string", R"({"a":1})", "weight_map['a'] is not a string"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.label);
    spit(d / "model.safetensors.index.json", R"({"metadata":{},"weight_map":)" + c.weight_map + "}");
    auto ck = Checkpoint::open(d.string());
    ASSERT_FALSE(ck.ok());
    EXPECT_NE(ck.status().message().find(c.expect), std::string::npos) << ck.status().message();
    EXPECT_NE(ck.status().message().find("model.safetensors.index.json"), std::string::npos);
  }
  spit(d / "model.safetensors.index.json", R"({"metadata":{}})");
  EXPECT_NE(Checkpoint::open(d.string()).status().message().find("'weight_map'"), std::string::npos);
  spit(d / "model.safetensors.index.json", "{oops");
  EXPECT_NE(Checkpoint::open(d.string()).status().message().find("not valid JSON"), std::string::npos);
  spit(d / "model.safetensors.index.json",
       R"({"weight_map":{"a":"s1.safetensors","b":"s1.safetensors","c":"s2.safetensors"}})");
  auto ok = Checkpoint::open(d.string());
  ASSERT_TRUE(ok.ok()) << ok.status().message();
  EXPECT_EQ(ok->tensors().size(), 3u);
}

TEST(Safetensors, ParsesIndexInMemory) {
  auto ok = parse_safetensors_index(
      R"({"metadata":{"total_size":10,"format":"pt"},"weight_map":{"b":"s2.st","a":"s1.st","c":"s2.st"}})",
      "idx.json");
  ASSERT_TRUE(ok.ok()) << ok.status().message();
  EXPECT_EQ(ok->shards, (std::vector<std::string>{"s1.st", "s2.st"}));
  EXPECT_EQ(ok->weight_map.at("c"), "s2.st");
  EXPECT_EQ(ok->metadata.at("total_size"), "10");
  EXPECT_EQ(ok->metadata.at("format"), "pt");
  const std::pair<const char*, const char*> bad[] = {
      {"[]", "not a JSON object"},
      {"{", "not valid JSON"},
      {R"({"metadata":{}})", "missing or non-object 'weight_map'"},
      {R"({"metadata":1,"weight_map":{}})", "'metadata' is not an object"},
      {R"({"weight_map":{"a":"sub/x.st"}})", "is not a file name"},
      {R"({"weight_map":{"a":"x\\y"}})", "is not a file name"},
      {R"({"weight_map":{"a":"."}})", "is not a file name"},
      {R"({"weight_map":{"a":""}})", "is not a file name"},
  };
  for (const auto& [text, expect] : bad) {
    SCOPED_TRACE(text);
    auto r = parse_safetensors_index(text, "idx.json");
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find(expect), std::string::npos) << r.status().message();
    EXPECT_EQ(r.status().message().rfind("idx.json: ", 0), 0u);
  }
}

// --- malformed headers ---------------------------------------------------------------------

struct BadCase {
  const char* label;
  std::string file;        // whole file bytes
  ErrorCode code;
  const char* expect;      // substring of the message
  const char* tensor;      // tensor the message must name ("" for file-level errors)
};

std::string with_len(uint64_t n, const std::string& rest) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = char(uint8_t(n >> (8 * i)));
  return out + rest;
}

TEST(Safetensors, MalformedHeadersGiveSpecificErrors) {
  const auto C = ErrorCode::kCorruptData;
  const std::string t = R"("dtype":"F32","shape":[2])";
  const std::vector<BadCase> cases = {
      {"short file", std::string(5, '\0'), C, "too short for the 8-byte header length", ""},
      {"header over cap", with_len(100'000'001, "{}"), C, "exceeds the 100000000-byte limit", ""},
      {"header past end", with_len(64, "{}"), C, "runs past the end of the file", ""},
      {"huge header length", with_len(~uint64_t(0), "{}"), C, "exceeds", ""},
      {"empty header", with_len(0, ""), C, "header is not valid JSON", ""},
      {"not an object", make_file("[1,2]"), C, "header is not a JSON object", ""},
      {"string header", make_file(" \"{}\""), C, "header is not a JSON object", ""},
      {"bad json", make_file("{\"x\":"), C, "header is not valid JSON", ""},
      {"trailing garbage", make_file("{}}"), C, "header is not valid JSON", ""},
      {"invalid utf8", make_file("{\"\xff\":1}"), C, "header is not valid JSON", ""},
      {"duplicate tensor", make_file(R"({"w":{)" + t + R"(,"data_offsets":[0,8]},"w":{)" + t +
                                         R"(,"data_offsets":[8,16]}})", 16),
       C, "duplicate key 'w'", ""},
      {"duplicate field", make_file(R"({"w":{"dtype":"F32","dtype":"F16","shape":[],"data_offsets":[0,4]}})", 4),
       C, "duplicate key 'dtype'", ""},
      {"deep nesting", make_file(R"({"w":{"x":[[[1]]]}})"), C, "nested deeper than 4 levels", ""},
      {"metadata not object", make_file(R"({"__metadata__":[]})"), C,
       "'__metadata__' is not a JSON object", ""},
      {"metadata value", make_file(R"({"__metadata__":{"k":1}})"), C,
       "'__metadata__' value of 'k' is not a string", ""},
      {"entry not object", make_file(R"({"w":5})"), C, "entry is not a JSON object", "w"},
      {"missing dtype", make_file(R"({"w":{"shape":[1],"data_offsets":[0,4]}})", 4), C,
       "missing field 'dtype'", "w"},
      {"missing shape", make_file(R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", 4), C,
       "missing field 'shape'", "w"},
      {"missing offsets", make_file(R"({"w":{"dtype":"F32","shape":[1]}})", 4), C,
       "missing field 'data_offsets'", "w"},
      {"dtype not string", make_file(R"({"w":{"dtype":7,"shape":[1],"data_offsets":[0,4]}})", 4),
       C, "'dtype' is not a string", "w"},
      {"unknown dtype", make_file(R"({"w":{"dtype":"F17","shape":[1],"data_offsets":[0,4]}})", 4),
       C, "unknown dtype 'F17'", "w"},
      {"lowercase dtype", make_file(R"({"w":{"dtype":"f32","shape":[1],"data_offsets":[0,4]}})", 4),
       C, "unknown dtype 'f32'", "w"},
      {"e5m2 unsupported", make_file(R"({"w":{"dtype":"F8_E5M2","shape":[1],"data_offsets":[0,1]}})", 1),
       ErrorCode::kUnsupported, "dtype F8_E5M2 is not supported", "w"},
      {"shape not array", make_file(R"({"w":{"dtype":"F32","shape":3,"data_offsets":[0,12]}})", 12),
       C, "'shape' is not an array", "w"},
      {"negative dim", make_file(R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4),
       C, "not a non-negative integer", "w"},
      {"float dim", make_file(R"({"w":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}})", 4),
       C, "not a non-negative integer", "w"},
      {"dim too big", make_file(R"({"w":{"dtype":"U8","shape":[18446744073709551615],"data_offsets":[0,4]}})", 4),
       C, "not a non-negative integer", "w"},
      {"numel overflow", make_file(R"({"w":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,4]}})", 4),
       C, "overflows the element count", "w"},
      {"bytes overflow", make_file(R"({"w":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,4]}})", 4),
       C, "overflows the byte size", "w"},
      {"offsets arity", make_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", 4),
       C, "is not [begin, end]", "w"},
      {"offsets negative", make_file(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[-4,0]}})"),
       C, "is not [begin, end]", "w"},
      {"end before begin", make_file(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[4,0]}})", 4),
       C, "end before begin", "w"},
      {"past data", make_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4),
       C, "run past the data section (4 bytes)", "w"},
      {"size mismatch", make_file(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8),
       C, "hold 8 bytes but F32 [3] needs 12", "w"},
      {"overlap", make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12),
       C, "overlap tensor 'a' [0, 8]", "b"},
      {"same range", make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8),
       C, "overlap tensor 'a'", "b"},
      {"hole", make_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})", 12),
       C, "leave a hole of 4 bytes at offset 4", "b"},
      {"first not at zero", make_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8),
       C, "leave a hole of 4 bytes at offset 0", "a"},
      {"trailing bytes", make_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 6),
       C, "tensors cover 4 bytes but the data section has 6", ""},
      {"data without tensors", make_file("{}", 3), C, "tensors cover 0 bytes", ""},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.label);
    auto r = parse(c.file, "bad.safetensors");
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), c.code) << r.status().message();
    const std::string& msg = r.status().message();
    EXPECT_NE(msg.find(c.expect), std::string::npos) << msg;
    EXPECT_EQ(msg.rfind("bad.safetensors: ", 0), 0u) << msg;
    if (*c.tensor) {
      EXPECT_NE(msg.find(std::string("tensor '") + c.tensor + "'"), std::string::npos) << msg;
    }
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "one-line messages";
  }
}

TEST(Safetensors, ErrorMessagesStayShortAndPrintable) {
  std::string shape = "[";
  for (int i = 0; i < 5000; ++i) shape += "1.5,";
  shape += "1]";
  auto r = parse(make_file(R"({"w":{"dtype":"F32","shape":)" + shape + R"(,"data_offsets":[0,4]}})", 4));
  ASSERT_FALSE(r.ok());
  EXPECT_LT(r.status().message().size(), 200u) << r.status().message();
  EXPECT_NE(r.status().message().find("..."), std::string::npos);
  // A name with a newline and a parse error quoting a raw control byte stay on one line.
  auto n = parse(make_file(R"({"a\nb":{"dtype":"X","shape":[],"data_offsets":[0,0]}})"));
  ASSERT_FALSE(n.ok());
  EXPECT_NE(n.status().message().find("tensor 'a\\x0ab'"), std::string::npos) << n.status().message();
  auto c = parse(make_file(std::string("{\"a\x01\":1}")));
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().message().find('\x01'), std::string::npos) << c.status().message();
}

TEST(Safetensors, AcceptsWhatTheFormatAllows) {
  // Unknown fields in an entry are ignored (as the Rust crate does); zero-size tensors may
  // share an offset; entries may be listed in any order; whitespace may pad the header on
  // either side; "__metadata__" may be null.
  std::string hdr =
      " \n"
      R"({"b":{"dtype":"I8","shape":[2],"data_offsets":[4,6],"extra":{"k":[1]}},)"
      R"("z0":{"dtype":"F32","shape":[0,3],"data_offsets":[4,4]},)"
      R"("z1":{"dtype":"BOOL","shape":[0],"data_offsets":[4,4]},)"
      R"("a":{"dtype":"F8_E4M3","shape":[2,2],"data_offsets":[0,4]},"__metadata__":null})"
      "   \t\n";
  auto r = parse(make_file(hdr, 6));
  ASSERT_TRUE(r.ok()) << r.status().message();
  ASSERT_EQ(r->tensors.size(), 4u);
  EXPECT_EQ(r->tensors[0].name, "a");
  EXPECT_EQ(r->tensors[1].name, "z0");
  EXPECT_EQ(r->tensors[2].name, "z1");
  EXPECT_EQ(r->tensors[3].name, "b");
  EXPECT_EQ(r->tensors[0].dtype, DType::kF8E4M3);
}

TEST(Safetensors, OpenErrors) {
  fs::path d = temp_dir();
  EXPECT_EQ(SafetensorsFile::open((d / "none.safetensors").string()).status().code(),
            ErrorCode::kNotFound);
  spit(d / "empty.safetensors", "");
  auto e = SafetensorsFile::open((d / "empty.safetensors").string());
  EXPECT_EQ(e.status().code(), ErrorCode::kCorruptData);
  EXPECT_NE(e.status().message().find("empty.safetensors: file is 0 bytes"), std::string::npos);
  spit(d / "bad.safetensors", make_file(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8));
  auto b = Checkpoint::open((d / "bad.safetensors").string());
  EXPECT_NE(b.status().message().find("bad.safetensors: tensor 'w'"), std::string::npos);
  // More dims than a TensorView holds: listed, bytes readable, but no view.
  spit(d / "deep.safetensors",
       make_file(R"({"w":{"dtype":"U8","shape":[1,1,1,1,1,1,2],"data_offsets":[0,2]}})", 2));
  auto f = SafetensorsFile::open((d / "deep.safetensors").string());
  ASSERT_TRUE(f.ok()) << f.status().message();
  EXPECT_EQ(f->view("w").status().code(), ErrorCode::kUnsupported);
  EXPECT_EQ(f->bytes(*f->find("w")).size(), 2u);
}

// --- fuzz corpus replay --------------------------------------------------------------------
// Every file in fuzz/corpus/safetensors_header goes through the fuzz target's own body
// (fuzz/safetensors_header_fuzz.h), which traps on a crash-free but wrong acceptance; here
// it must come back (no crash, no sanitizer report in sanitized builds). Hand-written seeds
// also state their expected outcome: valid-* parse as files, bad-* do not, wrapped-valid-*
// parse once wrapped with a length prefix, wrapped-bad-* never parse.

TEST(Safetensors, FuzzCorpusReplays) {
  fs::path dir = fs::path(MOEOPT_SOURCE_DIR) / "fuzz" / "corpus" / "safetensors_header";
  ASSERT_TRUE(fs::is_directory(dir)) << dir;
  int n = 0;
  for (const auto& de : fs::directory_iterator(dir)) {
    if (!de.is_regular_file()) continue;
    std::string name = de.path().filename().string();
    SCOPED_TRACE(name);
    std::string bytes = slurp(de.path());
    const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
    int accepted = fuzz::run_safetensors_header_input(p, bytes.size());
    auto r = parse(bytes, name);
    if (!r.ok()) {
      EXPECT_EQ(r.status().message().rfind(name + ": ", 0), 0u) << r.status().message();
    }
    auto starts = [&](const char* prefix) { return name.rfind(prefix, 0) == 0; };
    if (starts("valid-")) {
      EXPECT_TRUE(r.ok()) << r.status().message();
    }
    if (starts("bad-")) {
      EXPECT_FALSE(r.ok());
    }
    if (starts("wrapped-valid-")) {
      EXPECT_EQ(accepted, 1);
    }
    if (starts("wrapped-bad-")) {
      EXPECT_EQ(accepted, 0);
    }
    ++n;
  }
  EXPECT_GE(n, 10);
}

TEST(Safetensors, IndexFuzzCorpusReplays) {
  fs::path dir = fs::path(MOEOPT_SOURCE_DIR) / "fuzz" / "corpus" / "safetensors_index";
  ASSERT_TRUE(fs::is_directory(dir)) << dir;
  int n = 0;
  for (const auto& de : fs::directory_iterator(dir)) {
    if (!de.is_regular_file()) continue;
    std::string name = de.path().filename().string();
    SCOPED_TRACE(name);
    std::string bytes = slurp(de.path());
    int accepted = fuzz::run_safetensors_index_input(
        reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    if (name.rfind("valid-", 0) == 0) {
      EXPECT_EQ(accepted, 1);
    }
    if (name.rfind("bad-", 0) == 0) {
      EXPECT_EQ(accepted, 0);
    }
    ++n;
  }
  EXPECT_GE(n, 5);
}

}  // namespace
}  // namespace moeopt
