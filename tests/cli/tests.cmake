# CLI behaviour tests: exit codes and one-line errors of `moeopt` subcommands (label "cli").
# Each test runs the built binary through run_cli.cmake.
set(_cli_runner ${CMAKE_CURRENT_LIST_DIR}/run_cli.cmake)
set(_bad ${PROJECT_SOURCE_DIR}/tests/data/bad_configs)

function(moeopt_cli_test name args rc)
  cmake_parse_arguments(T "" "STDERR;STDOUT" "" ${ARGN})
  set(defs -DEXE=$<TARGET_FILE:moeopt_cli> "-DARGS=${args}" -DEXPECT_RC=${rc})
  if(DEFINED T_STDERR)
    list(APPEND defs "-DEXPECT_STDERR=${T_STDERR}")
  endif()
  if(DEFINED T_STDOUT)
    list(APPEND defs "-DEXPECT_STDOUT=${T_STDOUT}")
  endif()
  add_test(NAME cli_${name} COMMAND ${CMAKE_COMMAND} ${defs} -P ${_cli_runner})
  set_tests_properties(cli_${name} PROPERTIES LABELS cli ENVIRONMENT MOEOPT_HOME=${PROJECT_SOURCE_DIR})
endfunction()

# inspect: bad input -> exit 2 with "moeopt inspect: error: <file>: <what>" on one line.
# Expert placement from the demo model's measured routing (tests/data/expert_load_demo_metrics.txt,
# a /metrics dump of serve): 16 experts on 4 GPUs, one replica slot each.
moeopt_cli_test(inspect_ep_measured_load
  "inspect|${PROJECT_SOURCE_DIR}/models/tiny-qwen3-moe-novels|--ep|4|--redundant|1|--expert-load|${PROJECT_SOURCE_DIR}/tests/data/expert_load_demo_metrics.txt" 0
  STDOUT "over 4 MoE layers: contiguous 1.493 mean, 1.750 worst; balanced 1.029 mean, 1.053 worst")
moeopt_cli_test(inspect_ep_uniform "inspect|qwen3-30b-a3b|--ep|8" 0
  STDOUT "contiguous 1.000 mean, 1.000 worst; balanced 1.000 mean, 1.000 worst\n  \\(uniform load assumed")
moeopt_cli_test(inspect_ep_too_many_gpus "inspect|${PROJECT_SOURCE_DIR}/models/tiny-qwen3-moe-novels|--ep|32" 2
  STDERR "^moeopt inspect: error: --ep 32: the model has 16 routed experts\n$")
moeopt_cli_test(inspect_expert_load_without_ep "inspect|qwen3-30b-a3b|--expert-load|x" 2
  STDERR "^moeopt inspect: error: --redundant and --expert-load need --ep N\n$")
moeopt_cli_test(inspect_expert_load_no_samples "inspect|${PROJECT_SOURCE_DIR}/models/tiny-qwen3-moe-novels|--ep|2|--expert-load|${_bad}/invalid_json.json" 2
  STDERR "invalid_json.json: expert load: no moeopt_expert_tokens_total samples")
moeopt_cli_test(inspect_missing_path "inspect|/nonexistent/model/config.json" 2
  STDERR "^moeopt inspect: error: /nonexistent/model/config.json: no such file or directory\n$")
moeopt_cli_test(inspect_unknown_name "inspect|no-such-model" 2
  STDERR "^moeopt inspect: error: 'no-such-model' is not a file, a directory or a catalog model")
moeopt_cli_test(inspect_invalid_json "inspect|${_bad}/invalid_json.json" 2
  STDERR "^moeopt inspect: error: [^\n]*invalid_json.json: invalid JSON: ")
moeopt_cli_test(inspect_bad_field "inspect|${_bad}/topk_larger_than_experts.json" 2
  STDERR "topk_larger_than_experts.json: field 'num_experts_per_tok' \\(9\\) is larger than num_experts \\(8\\)")
moeopt_cli_test(inspect_non_numeric "inspect|${_bad}/string_hidden_size.json" 2
  STDERR "string_hidden_size.json: field 'hidden_size': expected an integer")
moeopt_cli_test(inspect_unknown_model_type "inspect|${_bad}/unknown_model_type.json" 2
  STDERR "field 'model_type': 'gpt2' is not supported")
moeopt_cli_test(inspect_dir_without_config "inspect|${PROJECT_SOURCE_DIR}/tests/data" 2
  STDERR "directory has no config.json")
moeopt_cli_test(inspect_bad_gpu_flag "inspect|Qwen3-30B-A3B|--gpu|a100" 2)
moeopt_cli_test(inspect_bad_ctx_flag "inspect|Qwen3-30B-A3B|--ctx|0" 2)

# inspect: good input -> exit 0.
moeopt_cli_test(inspect_catalog_json "inspect|qwen3-30b-a3b|--json" 0
  STDOUT "\"params_total\": 30532122624")
moeopt_cli_test(inspect_catalog_table "inspect|DeepSeek-V3|--gpu|h200" 0
  STDOUT "MLA, 128 heads")
moeopt_cli_test(inspect_config_path "inspect|${PROJECT_SOURCE_DIR}/models/catalog/Mixtral-8x7B-v0.1/config.json" 0
  STDOUT "block_sparse|mixtral")
moeopt_cli_test(inspect_list "inspect|--list" 0 STDOUT "DeepSeek-V2-Lite\nDeepSeek-V3\n")
moeopt_cli_test(inspect_no_model "inspect" 2 STDERR "^moeopt inspect: error: missing model")

# bench decode / bench prefill on the CPU (tiny default model): the JSON rows exist, their
# numbers are positive and the % of the roofline is in (0, 100]. Decode KV budget: f32 KV of
# 4 layers x 2 heads x 64 x (K, V) = 4 KiB per token, 64 KiB per 16-token block; 0.0005 GiB
# holds 4 sequences of 16 + 4 tokens (2 blocks) and 2 of 40 + 4 (3 blocks), so
# 1,2,max -> input 16: 1, 2, 4; input 40: 1, 2 (max = 2 deduplicated): 5 rows.
set(_bench_json_check ${CMAKE_CURRENT_LIST_DIR}/check_bench_json.cmake)
add_test(NAME cli_bench_decode_json COMMAND ${CMAKE_COMMAND} -DEXE=$<TARGET_FILE:moeopt_cli>
  "-DARGS=bench|decode|--batch-sizes|1,2,max|--input-lens|16,40|--output-len|4|--threads|2|--kv-cache-gib|0.0005|--json|${CMAKE_CURRENT_BINARY_DIR}/bench_decode.json"
  -DJSON=${CMAKE_CURRENT_BINARY_DIR}/bench_decode.json -DSECTION=decode -DROWS=5
  "-DPOSITIVE=decode_tokens_per_s|ms_per_step|bound_tokens_per_s|prefill_tokens_per_s|bytes_per_step|experts_touched_per_layer"
  -DPCT=pct_of_bound -P ${_bench_json_check})
add_test(NAME cli_bench_prefill_json COMMAND ${CMAKE_COMMAND} -DEXE=$<TARGET_FILE:moeopt_cli>
  "-DARGS=bench|prefill|--prompt-lens|16,64|--repeats|2|--threads|2|--json|${CMAKE_CURRENT_BINARY_DIR}/bench_prefill.json"
  -DJSON=${CMAKE_CURRENT_BINARY_DIR}/bench_prefill.json -DSECTION=prefill -DROWS=2
  "-DPOSITIVE=prefill_tokens_per_s|median_seconds|flops|tflops_per_s"
  -DPCT=pct_of_peak -P ${_bench_json_check})
add_test(NAME cli_bench_ablation_json COMMAND ${CMAKE_COMMAND} -DEXE=$<TARGET_FILE:moeopt_cli>
  "-DARGS=bench|ablation|--batch-sizes|1,4|--input-len|32|--output-len|4|--prefill-len|64|--threads|2|--text|${PROJECT_SOURCE_DIR}/tests/data/demo_heldout_excerpt.txt|--json|${CMAKE_CURRENT_BINARY_DIR}/bench_ablation.json"
  -DJSON=${CMAKE_CURRENT_BINARY_DIR}/bench_ablation.json -DBATCHES=2
  -P ${CMAKE_CURRENT_LIST_DIR}/check_ablation_json.cmake)
# They check that no row exceeds its measured CPU bound: run alone, so that no other test
# holds a core while the bound or the rows are measured (RUN_SERIAL).
set_tests_properties(cli_bench_decode_json cli_bench_prefill_json cli_bench_ablation_json PROPERTIES LABELS cli
  ENVIRONMENT MOEOPT_HOME=${PROJECT_SOURCE_DIR} TIMEOUT 300 RUN_SERIAL TRUE)
moeopt_cli_test(bench_ablation_no_baseline "bench|ablation|--rows|fp8-weights" 2
  STDERR "^moeopt bench ablation: error: --rows: the first row is the bf16 baseline\n$")
moeopt_cli_test(bench_ablation_bad_row "bench|ablation|--rows|bf16,nope" 2
  STDERR "^moeopt bench ablation: error: --rows: 'nope' is not one of bf16, fp8-weights, fp8-kv-cache, sparsity-2-4 \\(in that order, each once\\)\n$")
moeopt_cli_test(bench_ablation_rows_out_of_order "bench|ablation|--rows|bf16,fp8-kv-cache,fp8-weights" 2
  STDERR "^moeopt bench ablation: error: --rows: 'fp8-weights' is not one of")
moeopt_cli_test(bench_decode_bad_batch "bench|decode|--batch-sizes|1,x" 2
  STDERR "^moeopt bench decode: error: --batch-sizes: 'x' is not a positive integer or max\n$")
moeopt_cli_test(bench_decode_output_len_1 "bench|decode|--output-len|1" 2
  STDERR "^moeopt bench decode: error: --output-len must be at least 3")
# The perplexity-only mode on the demo model's held-out excerpt: transformers' value (the
# golden of DemoModel.PerplexityEqualsTransformers) is 81.935235.
moeopt_cli_test(bench_quality_perplexity_only
  "bench|quality|--perplexity-only|--text|${PROJECT_SOURCE_DIR}/tests/data/demo_heldout_excerpt.txt|--json" 0
  STDOUT "\"perplexity\": 81\\.935")
moeopt_cli_test(bench_quality_perplexity_only_needs_text "bench|quality|--perplexity-only" 2
  STDERR "needs --text")
moeopt_cli_test(bench_quality_bad_lossy "bench|quality|--lossy|fp8-weights,nope" 2
  STDERR "^moeopt bench quality: error: --lossy: 'nope' is not fp8-weights, fp8-kv-cache, sparsity-2-4 or sparsity-2-4-wanda\n$")
moeopt_cli_test(bench_quality_wanda_needs_text "bench|quality|--lossy|sparsity-2-4-wanda" 2
  STDERR "calibrates on --text FILE")
moeopt_cli_test(bench_quality_two_criteria "bench|quality|--lossy|sparsity-2-4,sparsity-2-4-wanda" 2
  STDERR "two criteria for one pruning")
# The FP8 KV cache through the harness on the demo model's excerpt: the JSON names the cache.
moeopt_cli_test(bench_quality_fp8_kv
  "bench|quality|--lossy|fp8-kv-cache|--text|${PROJECT_SOURCE_DIR}/tests/data/demo_heldout_excerpt.txt|--max-tokens|512|--json" 0
  STDOUT "\"test_kv_cache\": \"fp8_e4m3\"")
# --device cuda on a machine without a GPU (CI): one line, exit 2, before anything is loaded
# (a build without CUDA says so instead). On a GPU machine both commands run (exit 0, JSON
# with "device": "cuda") and the tests report themselves skipped; the GPU numbers are
# checked by test_cuda's CudaQualityTest.
foreach(_mode comparison perplexity_only)
  if(_mode STREQUAL "comparison")
    set(_extra "--lossy|fp8-weights,fp8-kv-cache|--max-tokens|512")
  else()
    set(_extra "--perplexity-only")
  endif()
  moeopt_cli_test(bench_quality_cuda_${_mode}_without_gpu
    "bench|quality|--device|cuda|${_extra}|--text|${PROJECT_SOURCE_DIR}/tests/data/demo_heldout_excerpt.txt|--json" 2
    STDERR "^moeopt bench quality: error: --device cuda: (no GPU found \\([^\n]+\\)|this build of moeopt has no CUDA support[^\n]*)\n$")
  set_tests_properties(cli_bench_quality_cuda_${_mode}_without_gpu PROPERTIES
    SKIP_REGULAR_EXPRESSION "\"device\": \"cuda\"")
endforeach()
moeopt_cli_test(bench_prefill_bad_len "bench|prefill|--prompt-lens|0" 2
  STDERR "^moeopt bench prefill: error: --prompt-lens: '0' is not a positive integer\n$")

# FP8 checkpoints: quantisation formats that do not run -> exit 2, one line naming the key.
set(_fp8 ${PROJECT_SOURCE_DIR}/tests/cli/fp8)
foreach(m gptq awq bitsandbytes)
  moeopt_cli_test(generate_quant_${m} "generate|--model|${_fp8}/${m}|--prompt-ids|1,2" 2
    STDERR "^moeopt generate: error: [^\n]*config.json: field 'quantization_config.quant_method': '${m}' is not supported \\(only block-wise fp8\\)\n$")
endforeach()
moeopt_cli_test(generate_fp8_per_tensor "generate|--model|${_fp8}/fp8_per_tensor|--prompt-ids|1,2" 2
  STDERR "^moeopt generate: error: [^\n]*field 'quantization_config.weight_block_size' is missing: only block-wise fp8 is supported\n$")
moeopt_cli_test(generate_fp8_block64 "generate|--model|${_fp8}/fp8_block64|--prompt-ids|1,2" 2
  STDERR "^moeopt generate: error: [^\n]*field 'quantization_config.weight_block_size' is \\[64, 64\\]: only \\[128, 128\\] blocks run\n$")
moeopt_cli_test(generate_fp8_static "generate|--model|${_fp8}/fp8_static|--prompt-ids|1,2" 2
  STDERR "^moeopt generate: error: [^\n]*field 'quantization_config.activation_scheme' is 'static'")
moeopt_cli_test(generate_fp8_weights_bad_value "generate|--fp8-weights|yes|--prompt-ids|1,2" 2)
moeopt_cli_test(bench_decode_fp8_weights_bad_value "bench|decode|--fp8-weights|1|--batch-sizes|1" 2)
moeopt_cli_test(init_random_bad_scale_dtype "init-random|--config|qwen3-30b-a3b|--out|/tmp/x|--fp8|--fp8-scale-dtype|f64" 2)

# Configs written by transformers 5 save_pretrained (tests/reference/golden_configs/tf5,
# manifest.json names each one's original): `inspect` prints the same for both, as a table
# and as JSON. Hub originals are given as checkpoint directories, the others as files.
set(_tf5 ${PROJECT_SOURCE_DIR}/tests/reference/golden_configs/tf5)
file(READ ${_tf5}/manifest.json _tf5_manifest)
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${_tf5}/manifest.json)
string(JSON _tf5_n LENGTH "${_tf5_manifest}" configs)
math(EXPR _tf5_last "${_tf5_n} - 1")
foreach(i RANGE ${_tf5_last})
  string(JSON _name GET "${_tf5_manifest}" configs ${i} name)
  string(JSON _orig GET "${_tf5_manifest}" configs ${i} original)
  if(_orig MATCHES "^models/catalog/(.*)/config.json$")
    set(_a ${PROJECT_SOURCE_DIR}/models/catalog/${CMAKE_MATCH_1})
    set(_b ${_tf5}/${_name})
  else()
    set(_a ${PROJECT_SOURCE_DIR}/${_orig})
    set(_b ${_tf5}/${_name}/config.json)
  endif()
  add_test(NAME cli_inspect_tf5_${_name} COMMAND ${CMAKE_COMMAND} -DEXE=$<TARGET_FILE:moeopt_cli>
    -DA=${_a} -DB=${_b} -DTMP=${CMAKE_CURRENT_BINARY_DIR}/inspect_tf5_${_name}
    -P ${CMAKE_CURRENT_LIST_DIR}/compare_inspect.cmake)
  set_tests_properties(cli_inspect_tf5_${_name} PROPERTIES LABELS cli ENVIRONMENT MOEOPT_HOME=${PROJECT_SOURCE_DIR})
endforeach()

# DeepSeek (MLA) on the CPU: generate from a tiny golden config's init-random checkpoint
# (materialised into the test cache); the tokens themselves are checked against transformers
# by GoldenTest.MatchesTransformers.
foreach(_ds deepseek_v2_nolora_grouped_odd deepseek_v3_lora_noaux_yarn_dense1)
  moeopt_cli_test(generate_cpu_${_ds}
    "generate|--model|${PROJECT_SOURCE_DIR}/tests/reference/golden_configs/${_ds}.json|--device|cpu|--prompt-ids|5,17,23|--max-tokens|8|--temperature|0|--ignore-eos" 0
    STDOUT "\\[0\\] [0-9]+(,[0-9]+)(,[0-9]+)(,[0-9]+)(,[0-9]+)(,[0-9]+)(,[0-9]+)(,[0-9]+) \\(length\\)")
  set_tests_properties(cli_generate_cpu_${_ds} PROPERTIES
    ENVIRONMENT "MOEOPT_HOME=${PROJECT_SOURCE_DIR};MOEOPT_CACHE=${CMAKE_BINARY_DIR}/test-cache")
endforeach()
