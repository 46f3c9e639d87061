// Parsers of /etc/os-release, /proc/cpuinfo and /proc/meminfo on text captured from real
// machines (x86 server, AArch64 board) and on malformed input.
#include <gtest/gtest.h>

#include <filesystem>

#include "moeopt/system/host_info.h"

namespace moeopt::system {
namespace {

TEST(OsRelease, ParsesQuotedAndBareValues) {
  const char* text =
      "PRETTY_NAME=\"Ubuntu 24.04.1 LTS\"\n"
      "NAME=\"Ubuntu\"\n"
      "VERSION_ID=\"24.04\"\n"
      "# a comment=ignored\n"
      "ID=ubuntu\n"
      "ID_LIKE=debian\n";
  OsInfo os = parse_os_release(text);
  EXPECT_EQ(os.pretty_name, "Ubuntu 24.04.1 LTS");
  EXPECT_EQ(os.id, "ubuntu");
  EXPECT_EQ(os.version_id, "24.04");
}

TEST(OsRelease, FallsBackToNameAndVersionAndHandlesEscapes) {
  OsInfo os = parse_os_release("NAME='Fedora Linux'\nVERSION=\"40 (\\\"Server\\\")\"\nID=fedora\r\n");
  EXPECT_EQ(os.pretty_name, "Fedora Linux 40 (\"Server\")");
  EXPECT_EQ(os.id, "fedora");
  EXPECT_EQ(os.version_id, "");
}

TEST(OsRelease, GarbageGivesEmptyFields) {
  OsInfo os = parse_os_release("no equals sign here\n=\n\n\x01\x02");
  EXPECT_EQ(os.pretty_name, "");
  EXPECT_EQ(os.id, "");
}

// Two sockets, two cores each, two threads per core (8 logical CPUs); trimmed flags.
std::string two_socket_cpuinfo() {
  std::string out;
  const int phys[8] = {0, 0, 1, 1, 0, 0, 1, 1};
  const int core[8] = {0, 1, 0, 1, 0, 1, 0, 1};
  for (int i = 0; i < 8; ++i) {
    out += "processor\t: " + std::to_string(i) + "\n";
    out += "vendor_id\t: GenuineIntel\n";
    out += "model name\t: Intel(R) Xeon(R) Platinum 8480+\n";
    out += "physical id\t: " + std::to_string(phys[i]) + "\n";
    out += "siblings\t: 4\n";
    out += "core id\t\t: " + std::to_string(core[i]) + "\n";
    out += "cpu cores\t: 2\n";
    out += "flags\t\t: fpu vme sse sse2 avx fma f16c avx2 avx512f avx512bw avx512_bf16 amx_bf16 amx_tile\n";
    out += "\n";
  }
  return out;
}

TEST(CpuInfo, CountsLogicalPhysicalAndSockets) {
  auto cpu = parse_cpuinfo(two_socket_cpuinfo());
  ASSERT_TRUE(cpu.ok()) << cpu.status().message();
  EXPECT_EQ(cpu->model, "Intel(R) Xeon(R) Platinum 8480+");
  EXPECT_EQ(cpu->logical_cores, 8);
  EXPECT_EQ(cpu->physical_cores, 4);
  EXPECT_EQ(cpu->sockets, 2);
  EXPECT_TRUE(cpu->avx2);
  EXPECT_TRUE(cpu->fma);
  EXPECT_TRUE(cpu->f16c);
  EXPECT_TRUE(cpu->avx512f);
  EXPECT_TRUE(cpu->avx512bw);
  EXPECT_TRUE(cpu->avx512_bf16);
  EXPECT_TRUE(cpu->amx_bf16);
}

TEST(CpuInfo, FlagsMatchWholeWordsOnly) {
  // "avx512_vnni" must not count as avx512f, nor "avx" as avx2.
  auto cpu = parse_cpuinfo("processor : 0\nmodel name : X\nflags : sse avx avx512_vnni avx2x\n");
  ASSERT_TRUE(cpu.ok());
  EXPECT_FALSE(cpu->avx2);
  EXPECT_FALSE(cpu->avx512f);
  EXPECT_EQ(cpu->logical_cores, 1);
}

TEST(CpuInfo, AArch64WithoutModelNameOrTopology) {
  const char* text =
      "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes\nCPU implementer\t: 0x41\n\n"
      "processor\t: 1\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes\nCPU implementer\t: 0x41\n\n"
      "Hardware\t: BCM2835\n";
  auto cpu = parse_cpuinfo(text);
  ASSERT_TRUE(cpu.ok());
  EXPECT_EQ(cpu->logical_cores, 2);
  EXPECT_EQ(cpu->model, "BCM2835");
  EXPECT_EQ(cpu->physical_cores, 0);  // unknown, not guessed
  EXPECT_EQ(cpu->sockets, 0);
  EXPECT_FALSE(cpu->avx2);
}

TEST(CpuInfo, NoProcessorIsAnError) {
  auto cpu = parse_cpuinfo("model name : nothing else\n");
  ASSERT_FALSE(cpu.ok());
  EXPECT_NE(cpu.status().message().find("/proc/cpuinfo"), std::string::npos);
  EXPECT_FALSE(parse_cpuinfo("").ok());
}

TEST(MemInfo, ParsesKiB) {
  const char* text =
      "MemTotal:       16318412 kB\n"
      "MemFree:         1234567 kB\n"
      "MemAvailable:   12000000 kB\n"
      "Buffers:          300000 kB\n"
      "HugePages_Total:       0\n";
  auto mem = parse_meminfo(text);
  ASSERT_TRUE(mem.ok()) << mem.status().message();
  EXPECT_EQ(mem->total_bytes, 16318412ull * 1024);
  EXPECT_EQ(mem->available_bytes, 12000000ull * 1024);
}

TEST(MemInfo, OldKernelsWithoutMemAvailableUseMemFree) {
  auto mem = parse_meminfo("MemTotal: 2048 kB\nMemFree: 1024 kB\n");
  ASSERT_TRUE(mem.ok());
  EXPECT_EQ(mem->available_bytes, 1024ull * 1024);
}

TEST(MemInfo, MalformedOrMissingFieldsAreErrorsNamingTheField) {
  auto missing = parse_meminfo("MemFree: 1024 kB\n");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("MemTotal"), std::string::npos);
  for (const char* bad : {"MemTotal: lots kB\n", "MemTotal: -5 kB\n", "MemTotal: 12.5 kB\n",
                          "MemTotal: 99999999999999999999999 kB\n", "MemTotal:  kB\n"}) {
    auto r = parse_meminfo(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.status().message().find("MemTotal"), std::string::npos) << r.status().message();
  }
}

TEST(HostProbes, RunOnThisMachine) {
  // The real files: these must parse on any Linux box the tests run on.
  auto cpu = probe_cpu();
  ASSERT_TRUE(cpu.ok()) << cpu.status().message();
  EXPECT_GE(cpu->logical_cores, 1);
  auto mem = probe_memory();
  ASSERT_TRUE(mem.ok()) << mem.status().message();
  EXPECT_GT(mem->total_bytes, 0u);
  EXPECT_FALSE(probe_os().kernel_name.empty());
}

TEST(HostProbes, DiskOfMissingDirectoryMeasuresNearestParent) {
  auto tmp = std::filesystem::temp_directory_path();
  auto disk = probe_disk((tmp / "moeopt-does-not-exist" / "models").string());
  ASSERT_TRUE(disk.ok()) << disk.status().message();
  EXPECT_EQ(disk->probed_path, tmp.string());
  EXPECT_GT(disk->total_bytes, 0u);
  EXPECT_LE(disk->free_bytes, disk->total_bytes);
}

}  // namespace
}  // namespace moeopt::system
