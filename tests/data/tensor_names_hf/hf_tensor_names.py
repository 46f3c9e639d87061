# Writes <dir>/tensors.json for every <dir>/config.json below this folder: the tensor names
# and shapes that Hugging Face transformers saves for a randomly initialised model of that
# config (AutoModelForCausalLM.from_config + save_pretrained, read back with safetensors).
# Needs torch + transformers (the GPU machine has both); run from anywhere:
#   python3 tests/data/tensor_names_hf/hf_tensor_names.py
import json, os, tempfile
import torch, transformers
from safetensors import safe_open

here = os.path.dirname(os.path.abspath(__file__))
for name in sorted(os.listdir(here)):
    d = os.path.join(here, name)
    if not os.path.isfile(os.path.join(d, 'config.json')):
        continue
    cfg = transformers.AutoConfig.from_pretrained(d)
    model = transformers.AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.bfloat16)
    tensors = {}
    with tempfile.TemporaryDirectory() as t:
        model.save_pretrained(t)
        for f in sorted(os.listdir(t)):
            if f.endswith('.safetensors'):
                with safe_open(os.path.join(t, f), 'pt') as s:
                    for k in s.keys():
                        tensors[k] = list(s.get_slice(k).get_shape())
    # One tensor per line, sorted, so diffs stay readable.
    lines = [f'  {json.dumps(k)}: {json.dumps(v)}' for k, v in sorted(tensors.items())]
    with open(os.path.join(d, 'tensors.json'), 'w') as f:
        f.write('{\n "class": %s,\n "transformers": %s,\n "tensors": {\n'
                % (json.dumps(type(model).__name__), json.dumps(transformers.__version__)))
        f.write(',\n'.join(lines) + '\n }\n}\n')
    print(name, len(tensors))
