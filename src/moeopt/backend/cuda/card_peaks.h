// Nominal peaks of the cards moeopt benchmarks against, by CUDA device name; 0 when the card
// is not in the table. Used by `bench moe`, `bench decode` and `bench prefill`. Host-only
// (no CUDA headers), so CPU-only builds of the CLI include it too.
#pragma once

#include <algorithm>
#include <cctype>
#include <string>

namespace moeopt::cuda {

// HBM bandwidth in bytes/s: H100 SXM 3.35 TB/s, H100 PCIe 2.0 TB/s, H200 4.8 TB/s.
inline double nominal_hbm_Bps(const std::string& card) {
  std::string n = card;
  std::transform(n.begin(), n.end(), n.begin(), [](unsigned char c) { return char(std::toupper(c)); });
  if (n.find("H200") != std::string::npos) return 4.8e12;
  if (n.find("H100") != std::string::npos)
    return n.find("PCIE") != std::string::npos ? 2.0e12 : 3.35e12;
  return 0.0;
}

// Dense BF16 tensor peak in FLOP/s (SXM parts: 989 TFLOP/s for H100 and H200).
inline double nominal_tensor_flops(const std::string& card) {
  return card.find("H100") != std::string::npos || card.find("H200") != std::string::npos ? 989e12
                                                                                           : 0.0;
}

}  // namespace moeopt::cuda
