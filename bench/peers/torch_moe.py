"""PyTorch peer of the MoE expert path, built on torch._grouped_mm (the peer named in
docs/architecture.md): sort the (token, slot) pairs by expert, per-expert offsets, one grouped
GEMM for gate/up, silu(gate) * up, one grouped GEMM for down, scale by the routing weight and
index_add the rows back into the tokens.

Everything stays on the GPU with no host synchronisation (counts come from scatter_add, not
bincount), so the whole function can be captured in a CUDA graph.

Shapes: x [M, H] bf16; expert_ids [M, k] int (long or int32); expert_weights [M, k] f32;
w13 [E, 2I, H] bf16 (gate rows then up rows); w2 [E, H, I] bf16. Returns [M, H] bf16.
"""
import torch
import torch.nn.functional as F


def torch_grouped_mm_moe(x, expert_ids, expert_weights, w13, w2, residual=None):
    m, k = expert_ids.shape
    e = w13.shape[0]
    inter = w2.shape[2]
    flat = expert_ids.reshape(-1).long()
    order = torch.argsort(flat, stable=True)
    token = order // k
    counts = torch.zeros(e, dtype=torch.int32, device=x.device)
    counts.scatter_add_(0, flat, torch.ones_like(flat, dtype=torch.int32))
    offs = torch.cumsum(counts, 0, dtype=torch.int32)
    xs = x.index_select(0, token)
    # mat_b [E, K, N] as a transposed view of the row-major [E, N, K] weights.
    h = torch._grouped_mm(xs, w13.transpose(1, 2), offs=offs)
    a = F.silu(h[:, :inter]) * h[:, inter:]
    y = torch._grouped_mm(a, w2.transpose(1, 2), offs=offs)
    y = y * expert_weights.reshape(-1)[order].unsqueeze(1).to(y.dtype)
    out = residual.clone() if residual is not None else torch.zeros_like(x)
    out.index_add_(0, token, y)
    return out
