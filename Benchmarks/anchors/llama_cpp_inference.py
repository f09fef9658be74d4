#!/usr/bin/env python3
"""Inference anchor: llama.cpp (llama-cpp-python 0.3.36, built from source) against Conclave on the
same GGUF files, the same thread count, prompt and generation lengths, measured in one run.

For each model it runs our benchmark executable (`conclave-bench-inference --json`) and, in a fresh
subprocess, llama.cpp; the two alternate `--rounds` times and the medians are compared. It also checks
that llama.cpp loads the file (so files written by `conclave-client quantize` are proven readable) and
prints llama.cpp's greedy continuation next to ours.

  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_AVX512=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
      python3 -m venv /tmp/anchor && /tmp/anchor/bin/pip install llama-cpp-python==0.3.36
  /tmp/anchor/bin/python Benchmarks/anchors/llama_cpp_inference.py \
      --bench .build/release/conclave-bench-inference --client .build/release/conclave-client \
      --threads 2 --runs 5 models/*.gguf

`--llama-lib DIR` runs llama.cpp from another build (the directory holding its libllama.so, e.g. one built
for AVX-512 or for baseline x86-64): it becomes LLAMA_CPP_LIB_PATH for the llama.cpp subprocess, and the run
stops if any libllama/libggml that process mapped lies outside DIR (so a tier is never measured against
another tier's build by accident, e.g. through LD_LIBRARY_PATH). Every entry records llama.cpp's system info
line, the libraries it mapped and our kernel tier (set with CONCLAVE_KERNELS as usual).

`--before BENCH` adds a second build of our benchmark (e.g. main's, before a change) to every round of the
alternation, so a change is measured against its own baseline and llama.cpp in the same run.

Peak RSS of llama.cpp is the subprocess's peak minus the interpreter's RSS just before the model is
loaded (Python and numpy are not llama.cpp's cost); both raw and net figures are printed.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

PROMPT = "Patient presents with a persistent cough and mild fever for three days. "
GREEDY_PROMPT = "The capital of France is"


def rss_kib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def mapped_llama_libraries():
    """Real paths of the libllama/libggml shared objects this process has mapped."""
    paths = set()
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            if len(fields) >= 6 and os.path.basename(fields[5]).startswith(("libllama", "libggml")):
                paths.add(os.path.realpath(fields[5]))
    return sorted(paths)


def check_libraries_under(libraries, directory):
    """Every mapped llama.cpp library must come from `directory`; returns the ones that do not."""
    root = os.path.realpath(directory) + os.sep
    return [path for path in libraries if not path.startswith(root)]


def last_argmax(llm):
    """Greedy choice from the logits of the last evaluated token (the only row llama.cpp computes)."""
    import numpy as np
    logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))
    return int(np.argmax(logits))


def measure_llama(model, threads, runs, prompt_tokens, generate_tokens):
    """Runs in its own process: returns medians for llama.cpp on `model`."""
    import llama_cpp
    from llama_cpp import Llama

    baseline_kib = rss_kib()
    llm = Llama(model_path=model, n_threads=threads, n_threads_batch=threads, n_ctx=256,
                n_batch=prompt_tokens, n_ubatch=prompt_tokens, verbose=False)
    libraries = mapped_llama_libraries()
    lib_dir = os.environ.get("LLAMA_CPP_LIB_PATH")
    if lib_dir:
        stray = check_libraries_under(libraries, lib_dir)
        if stray:
            raise SystemExit(f"llama.cpp libraries loaded from outside LLAMA_CPP_LIB_PATH={lib_dir}: {stray}")
    prompt = llm.tokenize(PROMPT.encode(), add_bos=False)
    while len(prompt) < prompt_tokens:
        prompt += prompt
    prompt = prompt[:prompt_tokens]
    prefill, decode, first = [], [], []
    for run in range(runs + 1):
        llm.reset()
        start = time.perf_counter()
        llm.eval(prompt)
        token = last_argmax(llm)
        elapsed = time.perf_counter() - start
        decode_start = time.perf_counter()
        for _ in range(generate_tokens):
            llm.eval([token])
            token = last_argmax(llm)
        decode_elapsed = time.perf_counter() - decode_start
        if run == 0:
            continue  # warm-up, as in our benchmark
        prefill.append(prompt_tokens / elapsed)
        first.append(elapsed * 1000)
        decode.append(generate_tokens / decode_elapsed)
    # Greedy continuation, for comparison with ours.
    llm.reset()
    ids = llm.tokenize(GREEDY_PROMPT.encode(), add_bos=False)
    llm.eval(ids)
    greedy = []
    for _ in range(12):
        token = last_argmax(llm)
        greedy.append(token)
        llm.eval([token])
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "prompt_tokens_per_second": statistics.median(prefill),
        "generation_tokens_per_second": statistics.median(decode),
        "time_to_first_token_ms": statistics.median(first),
        "peak_rss_bytes_raw": peak_kib * 1024,
        "peak_rss_bytes": (peak_kib - baseline_kib) * 1024,
        "greedy_ids": greedy,
        "system_info": llama_cpp.llama_print_system_info().decode().strip(),
        "libraries": libraries,
    }


def measure_ours(bench, model, threads, runs, prompt_tokens, generate_tokens):
    out = subprocess.run([bench, "--model", model, "--threads", str(threads), "--runs", str(runs),
                          "--prompt-tokens", str(prompt_tokens), "--generate-tokens", str(generate_tokens), "--json"],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def our_greedy(client, model, threads):
    out = subprocess.run([client, "generate", "--model", model, "--prompt", GREEDY_PROMPT, "--max-tokens", "12",
                          "--temperature", "0", "--threads", str(threads), "--json"],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout)["ids"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*")
    parser.add_argument("--bench", default=".build/release/conclave-bench-inference")
    parser.add_argument("--client", default=".build/release/conclave-client")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2, help="alternations of ours and llama.cpp per model")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--generate-tokens", type=int, default=64)
    parser.add_argument("--before", help="a second conclave-bench-inference (a baseline build), alternated too")
    parser.add_argument("--llama-lib", help="directory of the libllama.so to run (LLAMA_CPP_LIB_PATH for llama.cpp only)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--measure-llama", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.measure_llama:
        print(json.dumps(measure_llama(args.measure_llama, args.threads, args.runs, args.prompt_tokens, args.generate_tokens)))
        return

    if not args.models:
        parser.error("name at least one GGUF model")
    llama_env = dict(os.environ)
    if args.llama_lib:
        if not os.path.isfile(os.path.join(args.llama_lib, "libllama.so")):
            parser.error(f"--llama-lib {args.llama_lib}: no libllama.so there")
        llama_env["LLAMA_CPP_LIB_PATH"] = os.path.realpath(args.llama_lib)
    keys = ["prompt_tokens_per_second", "generation_tokens_per_second", "time_to_first_token_ms", "peak_rss_bytes"]
    report = []
    for model in args.models:
        ours_runs, theirs_runs, before_runs = [], [], []
        for _ in range(args.rounds):
            ours_runs.append(measure_ours(args.bench, model, args.threads, args.runs, args.prompt_tokens, args.generate_tokens))
            if args.before:
                before_runs.append(measure_ours(args.before, model, args.threads, args.runs, args.prompt_tokens,
                                                args.generate_tokens))
            out = subprocess.run([sys.executable, __file__, "--measure-llama", model, "--threads", str(args.threads),
                                  "--runs", str(args.runs), "--prompt-tokens", str(args.prompt_tokens),
                                  "--generate-tokens", str(args.generate_tokens)],
                                 capture_output=True, text=True, env=llama_env)
            if out.returncode != 0:
                raise SystemExit(f"llama.cpp failed to load or run {model}:\n{out.stderr[-2000:]}")
            theirs_runs.append(json.loads(out.stdout))
        ours = {k: statistics.median(r[k] for r in ours_runs) for k in keys + ["scoring_tokens_per_second"]}
        theirs = {k: statistics.median(r[k] for r in theirs_runs) for k in keys}
        theirs["peak_rss_bytes_raw"] = statistics.median(r["peak_rss_bytes_raw"] for r in theirs_runs)
        backends = sorted({r["kernel_backend"] for r in ours_runs})
        if len(backends) != 1:
            raise SystemExit(f"{model}: our runs used different kernel tiers {backends}")
        entry = {
            "model": model, "threads": args.threads, "kernel_backend": backends[0],
            "llama_cpp_lib_path": llama_env.get("LLAMA_CPP_LIB_PATH"),
            "llama_cpp_system_info": theirs_runs[-1]["system_info"],
            "llama_cpp_libraries": theirs_runs[-1]["libraries"],
            "ours": ours, "llama_cpp": theirs,
            "ratio": {
                "prompt": ours["prompt_tokens_per_second"] / theirs["prompt_tokens_per_second"],
                "generation": ours["generation_tokens_per_second"] / theirs["generation_tokens_per_second"],
                "time_to_first_token": ours["time_to_first_token_ms"] / theirs["time_to_first_token_ms"],
                "peak_rss": ours["peak_rss_bytes"] / theirs["peak_rss_bytes"],
                "our_scoring_to_our_prompt": ours["scoring_tokens_per_second"] / ours["prompt_tokens_per_second"],
                "our_scoring_to_llama_cpp_prompt": ours["scoring_tokens_per_second"] / theirs["prompt_tokens_per_second"],
            },
            "llama_cpp_loads_file": True,
            "greedy_llama_cpp": theirs_runs[-1]["greedy_ids"],
            "greedy_ours": our_greedy(args.client, model, args.threads),
        }
        if before_runs:
            before = {k: statistics.median(r[k] for r in before_runs) for k in keys + ["scoring_tokens_per_second"]}
            entry["before"] = before
            entry["ratio"]["before_prompt"] = before["prompt_tokens_per_second"] / theirs["prompt_tokens_per_second"]
            entry["ratio"]["before_generation"] = (before["generation_tokens_per_second"]
                                                   / theirs["generation_tokens_per_second"])
        entry["load_average"] = open("/proc/loadavg").read().split()[:3]
        report.append(entry)
        if not args.json:
            r = entry["ratio"]
            print(f"{model} ({args.threads} threads, medians of {args.runs} runs × {args.rounds} rounds, "
                  f"our tier {entry['kernel_backend']})")
            print(f"  llama.cpp: {entry['llama_cpp_system_info']}")
            print(f"  llama.cpp libraries: {' '.join(entry['llama_cpp_libraries'])}")
            print(f"  prompt {args.prompt_tokens}: ours {ours['prompt_tokens_per_second']:.1f} tok/s, "
                  f"llama.cpp {theirs['prompt_tokens_per_second']:.1f} tok/s, ratio {r['prompt']:.2f}")
            print(f"  generation {args.generate_tokens}: ours {ours['generation_tokens_per_second']:.1f} tok/s, "
                  f"llama.cpp {theirs['generation_tokens_per_second']:.1f} tok/s, ratio {r['generation']:.2f}")
            print(f"  scoring {args.prompt_tokens} (every position's logits, as eval): ours "
                  f"{ours['scoring_tokens_per_second']:.1f} tok/s, {r['our_scoring_to_our_prompt']:.2f}x our prompt rate, "
                  f"{r['our_scoring_to_llama_cpp_prompt']:.2f}x llama.cpp's")
            print(f"  time to first token: ours {ours['time_to_first_token_ms']:.1f} ms, "
                  f"llama.cpp {theirs['time_to_first_token_ms']:.1f} ms, ratio {r['time_to_first_token']:.2f}")
            print(f"  peak RSS: ours {ours['peak_rss_bytes'] / 1e6:.1f} MB, llama.cpp {theirs['peak_rss_bytes'] / 1e6:.1f} MB "
                  f"net ({theirs['peak_rss_bytes_raw'] / 1e6:.1f} MB with Python), ratio {r['peak_rss']:.2f}")
            if before_runs:
                b = entry["before"]
                print(f"  before ({args.before}): prompt {b['prompt_tokens_per_second']:.1f} tok/s "
                      f"(ratio {r['before_prompt']:.2f}), generation {b['generation_tokens_per_second']:.1f} tok/s "
                      f"(ratio {r['before_generation']:.2f})")
            print(f"  load average after the model: {' '.join(entry['load_average'])}")
            same = entry["greedy_llama_cpp"] == entry["greedy_ours"]
            print(f"  greedy '{GREEDY_PROMPT}': llama.cpp {entry['greedy_llama_cpp']}")
            print(f"                             ours      {entry['greedy_ours']} ({'same' if same else 'differs'})")
            sys.stdout.flush()
    if args.json:
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
