# Shrinks every catalog config to a tiny model of the same architecture (same key set,
# same switches) so transformers can instantiate it; writes tiny/<name>/config.json.
import json, os, sys
root = sys.argv[1]
out = sys.argv[2]
for name in sorted(os.listdir(root)):
    c = json.load(open(os.path.join(root, name, 'config.json')))
    c.pop('auto_map', None)
    c.pop('quantization_config', None)
    mt = c['model_type']
    ds = mt.startswith('deepseek')
    heads = c['num_attention_heads']; kv = c.get('num_key_value_heads', heads)
    c['num_attention_heads'] = 4
    c['num_key_value_heads'] = 4 if kv == heads else 2
    c['hidden_size'] = 64
    if 'head_dim' in c: c['head_dim'] = 32  # != hidden/heads: exercises the explicit head_dim
    c['vocab_size'] = 256
    c['intermediate_size'] = 96
    c['num_hidden_layers'] = 3
    if 'moe_intermediate_size' in c: c['moe_intermediate_size'] = 32
    if 'shared_expert_intermediate_size' in c: c['shared_expert_intermediate_size'] = 48
    for k in ('num_experts', 'num_local_experts', 'n_routed_experts'):
        if k in c: c[k] = 8
    c['num_experts_per_tok'] = 2
    if ds:
        c['first_k_dense_replace'] = 1
        if c.get('n_group'): c['n_group'] = 4
        if c.get('topk_group'): c['topk_group'] = 2
        if c.get('q_lora_rank') is not None: c['q_lora_rank'] = 24
        c['kv_lora_rank'] = 16; c['qk_nope_head_dim'] = 8; c['qk_rope_head_dim'] = 8; c['v_head_dim'] = 8
        c.pop('num_nextn_predict_layers', None)
    if mt == 'qwen3_moe' or mt == 'qwen2_moe':
        c['mlp_only_layers'] = [1]  # a dense layer in the middle
    d = os.path.join(out, name); os.makedirs(d, exist_ok=True)
    json.dump(c, open(os.path.join(d, 'config.json'), 'w'), indent=2)
