// Tile heuristics for the MoE grouped GEMMs: see moe_heuristics.h.
#include "moeopt/backend/cuda/moe_heuristics.h"

#include <initializer_list>

namespace moeopt::cuda {

int moe_gemm_tile_rows(MoeGemmTile tile) {
  switch (tile) {
    case MoeGemmTile::kBm32Bn8: return 8;
    case MoeGemmTile::kBm64Bn16: return 16;
    case MoeGemmTile::kBm64Bn32: return 32;
    case MoeGemmTile::kBm128Bn64: return 64;
    case MoeGemmTile::kBm128Bn128: return 128;
    case MoeGemmTile::kBm32Bn8Bk128: return 8;
    case MoeGemmTile::kBm64Bn8: return 8;
    case MoeGemmTile::kBm64Bn8Bk128: return 8;
    case MoeGemmTile::kWgmma256x64: return 64;
    case MoeGemmTile::kWgmma256x128: return 128;
  }
  return 128;  // unreachable: every enumerator is handled above
}

const char* moe_gemm_tile_name(MoeGemmTile tile) {
  switch (tile) {
    case MoeGemmTile::kBm32Bn8: return "bm32_bn8";
    case MoeGemmTile::kBm64Bn16: return "bm64_bn16";
    case MoeGemmTile::kBm64Bn32: return "bm64_bn32";
    case MoeGemmTile::kBm128Bn64: return "bm128_bn64";
    case MoeGemmTile::kBm128Bn128: return "bm128_bn128";
    case MoeGemmTile::kBm32Bn8Bk128: return "bm32_bn8_bk128";
    case MoeGemmTile::kBm64Bn8: return "bm64_bn8";
    case MoeGemmTile::kBm64Bn8Bk128: return "bm64_bn8_bk128";
    case MoeGemmTile::kWgmma256x64: return "wgmma256x64";
    case MoeGemmTile::kWgmma256x128: return "wgmma256x128";
  }
  return "?";
}

MoeGemmTile choose_moe_gemm_tile(int64_t num_tokens, int64_t top_k, int64_t num_experts) {
  // Expected rows per expert (uniform routing). At decode sizes a token tile of about 1-2x
  // the mean keeps almost every expert in one tile, so weights stream once; past ~32 rows per
  // expert the layer turns compute-bound and the wgmma kernel takes over.
  const double rows_per_expert =
      double(num_tokens) * double(top_k) / double(num_experts > 0 ? num_experts : 1);
  // Up to 4 rows per expert: 32 weight rows x 8 tokens with 128-wide k steps; it beat the
  // 64-wide bm32_bn8 by 0.5-2.5 us at M = 1..64 in the H200 sweep of d285f8f.
  if (rows_per_expert <= 4.0) return MoeGemmTile::kBm32Bn8Bk128;
  if (rows_per_expert <= 12.0) return MoeGemmTile::kBm64Bn16;
  if (rows_per_expert <= 24.0) return MoeGemmTile::kBm64Bn32;
  // From 32 rows per expert the sm_90a wgmma kernel (TMA weights, warp-specialised,
  // persistent, 256 weight rows per tile) wins. H100 sweep, Qwen3-30B-A3B shape, uniform /
  // zipf routing (us): M = 512: wgmma256x64 447 / 471, bm64_bn32 484 / 486, bm128_bn64
  // 488 / 496; M = 1024: wgmma256x64 546 / 543, wgmma256x128 526 / 555; M = 2048:
  // wgmma256x128 725 / 673, wgmma256x64 771 / 695, bm128_bn64 830 / 857; M = 8192:
  // wgmma256x128 1763 / 1715, bm128_bn128 2603 / 2564. 24..32 rows per expert not measured.
  if (rows_per_expert <= 48.0) return MoeGemmTile::kWgmma256x64;
  return MoeGemmTile::kWgmma256x128;
}

MoeGemmTile moe_gemm2_tile(MoeGemmTile gemm1_tile) {
  // The same tile for both GEMMs until a measured pair says otherwise (bench/moe_layer.py
  // --sweep-pairs times every pair with equal token rows).
  return gemm1_tile;
}

bool moe_use_pdl(int64_t num_tokens, int64_t top_k, int64_t num_experts) {
  // Measured (H200, Qwen3-30B-A3B shape): PDL saves 2-40 us from M = 8 to 8192. At M = 1 it
  // cost 6 us while the permutation was two kernels (count + a 128-block place); since the
  // single-block permutation (d285f8f) it saves 1.2-2.7 us there too. So: everywhere.
  (void)num_tokens;
  (void)top_k;
  (void)num_experts;
  return true;
}

int moe_fp8_tile_rows(MoeFp8Tile tile) {
  switch (tile) {
    case MoeFp8Tile::kBm32Bn8:
    case MoeFp8Tile::kBm64Bn8:
    case MoeFp8Tile::kBm128Bn8: return 8;
    case MoeFp8Tile::kBm64Bn16: return 16;
    case MoeFp8Tile::kBm64Bn32: return 32;
    case MoeFp8Tile::kBm128Bn64: return 64;
    case MoeFp8Tile::kBm128Bn128: return 128;
    case MoeFp8Tile::kWgmma256x16: return 16;
    case MoeFp8Tile::kWgmma256x32: return 32;
    case MoeFp8Tile::kWgmma256x64: return 64;
  }
  return 32;  // unreachable: every enumerator is handled above
}

bool is_fp8_wgmma_tile(MoeFp8Tile tile) {
  switch (tile) {
    case MoeFp8Tile::kWgmma256x16:
    case MoeFp8Tile::kWgmma256x32:
    case MoeFp8Tile::kWgmma256x64: return true;
    case MoeFp8Tile::kBm32Bn8:
    case MoeFp8Tile::kBm64Bn8:
    case MoeFp8Tile::kBm128Bn8:
    case MoeFp8Tile::kBm64Bn16:
    case MoeFp8Tile::kBm64Bn32:
    case MoeFp8Tile::kBm128Bn64:
    case MoeFp8Tile::kBm128Bn128: return false;
  }
  return false;
}

int moe_fp8_tile_weight_rows(MoeFp8Tile tile) {
  switch (tile) {
    case MoeFp8Tile::kBm32Bn8: return 32;
    case MoeFp8Tile::kBm64Bn8:
    case MoeFp8Tile::kBm64Bn16:
    case MoeFp8Tile::kBm64Bn32: return 64;
    case MoeFp8Tile::kBm128Bn8:
    case MoeFp8Tile::kBm128Bn64:
    case MoeFp8Tile::kBm128Bn128: return 128;
    case MoeFp8Tile::kWgmma256x16:
    case MoeFp8Tile::kWgmma256x32:
    case MoeFp8Tile::kWgmma256x64: return 256;
  }
  return 64;  // unreachable
}

const char* moe_fp8_tile_name(MoeFp8Tile tile) {
  switch (tile) {
    case MoeFp8Tile::kBm32Bn8: return "fp8_bm32_bn8";
    case MoeFp8Tile::kBm64Bn8: return "fp8_bm64_bn8";
    case MoeFp8Tile::kBm128Bn8: return "fp8_bm128_bn8";
    case MoeFp8Tile::kBm64Bn16: return "fp8_bm64_bn16";
    case MoeFp8Tile::kBm64Bn32: return "fp8_bm64_bn32";
    case MoeFp8Tile::kBm128Bn64: return "fp8_bm128_bn64";
    case MoeFp8Tile::kBm128Bn128: return "fp8_bm128_bn128";
    case MoeFp8Tile::kWgmma256x16: return "fp8_wgmma256x16";
    case MoeFp8Tile::kWgmma256x32: return "fp8_wgmma256x32";
    case MoeFp8Tile::kWgmma256x64: return "fp8_wgmma256x64";
  }
  return "?";
}

namespace {

// The mma.sync tile for a token tile of about 1-2x the rows per expert (the BF16 rule).
MoeFp8Tile mma_fp8_tile(double rows_per_expert) {
  if (rows_per_expert <= 4.0) return MoeFp8Tile::kBm32Bn8;
  if (rows_per_expert <= 12.0) return MoeFp8Tile::kBm64Bn16;
  if (rows_per_expert <= 40.0) return MoeFp8Tile::kBm64Bn32;
  if (rows_per_expert <= 96.0) return MoeFp8Tile::kBm128Bn64;
  return MoeFp8Tile::kBm128Bn128;
}

}  // namespace

MoeFp8Tile choose_moe_fp8_tile(int64_t num_tokens, int64_t top_k, int64_t num_experts) {
  const double rows_per_expert =
      double(num_tokens) * double(top_k) / double(num_experts > 0 ? num_experts : 1);
  // H200 sweep (bench moe --fp8-tiles, Qwen3-30B-A3B shape, uniform routing, us; mma.sync
  // = the previous rule): M = 1: bm32_bn8 20.6, wgmma256x16 22.4; M = 8: 76.1 / 80.7;
  // M = 64: 176.6 / 175.9; M = 256: bm64_bn32 259.6, wgmma256x32 190.8, x16 219.3, x64 214.5;
  // M = 512: bm64_bn32 361.8, wgmma256x32 238.3, x64 230.6; M = 1024: bm128_bn64 666.2,
  // wgmma256x64 301.7; M = 4096: bm128_bn128 1882.8, wgmma256x64 821.7 (docs/perf.md). Up to
  // 4 rows per expert the 32-row mma.sync blocks keep every SM streaming; past that the
  // TMA-fed wgmma tiles win at every measured M.
  if (rows_per_expert <= 4.0) return MoeFp8Tile::kBm32Bn8;
  if (rows_per_expert <= 24.0) return MoeFp8Tile::kWgmma256x32;
  return MoeFp8Tile::kWgmma256x64;
}

MoeFp8Tile moe_fp8_gemm2_tile(MoeFp8Tile gemm1_tile) {
  switch (gemm1_tile) {
    case MoeFp8Tile::kBm32Bn8:
    case MoeFp8Tile::kBm64Bn8: return MoeFp8Tile::kBm128Bn8;
    case MoeFp8Tile::kBm128Bn8:
    case MoeFp8Tile::kBm64Bn16:
    case MoeFp8Tile::kBm64Bn32:
    case MoeFp8Tile::kBm128Bn64:
    case MoeFp8Tile::kBm128Bn128:
    case MoeFp8Tile::kWgmma256x16:
    case MoeFp8Tile::kWgmma256x32:
    case MoeFp8Tile::kWgmma256x64: break;
  }
  return gemm1_tile;
}

MoeFp8Tile choose_fp8_linear_tile(int64_t m, int64_t n, int num_sms, bool allow_wgmma) {
  // From 128 tokens, the largest wgmma token tile whose (token tile, 256-row weight block)
  // items still give nine tenths of the SMs one each (the persistent kernel loops over them).
  auto enough = [&](int64_t rows, int64_t weight_rows) {
    return ((m + rows - 1) / rows) * ((n + weight_rows - 1) / weight_rows) * 10 >=
           int64_t(num_sms) * 9;
  };
  if (allow_wgmma && m >= 128)
    for (MoeFp8Tile t : {MoeFp8Tile::kWgmma256x64, MoeFp8Tile::kWgmma256x32,
                         MoeFp8Tile::kWgmma256x16})
      if (enough(moe_fp8_tile_rows(t), 256)) return t;
  // Otherwise the mma.sync rule for one expert holding all M rows, stepped down to smaller
  // tiles while the grid would leave more than a tenth of the SMs without a block.
  MoeFp8Tile t = mma_fp8_tile(double(m));
  while (t != MoeFp8Tile::kBm32Bn8 &&
         !enough(moe_fp8_tile_rows(t), moe_fp8_tile_weight_rows(t))) {
    t = MoeFp8Tile(int(t) - 1);
    if (t == MoeFp8Tile::kBm128Bn8) t = MoeFp8Tile::kBm64Bn8;  // more weight rows: no step down
  }
  return t;
}

}  // namespace moeopt::cuda
