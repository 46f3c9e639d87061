# Tokenizer tests against Hugging Face `tokenizers` (the reference, installed in .venv by
# scripts/setup.sh): for each vendored tokenizer, the corpus in tests/data/tokenizer_corpus is
# encoded and decoded by the reference and by `moeopt tokenize`/`detokenize`, and every line
# must agree. The *_variant names are vendored files with other components swapped in (see
# VARIANTS in compare_hf.py). Label: tokenizer (ctest -L tokenizer).
set(_tok_python ${PROJECT_SOURCE_DIR}/.venv/bin/python)
foreach(_tok qwen3 deepseek_v3 llama2 llama3
        llama2_metaspace_first llama2_metaspace_split qwen3_bytelevel_lower qwen3_nfd_whitespace
        tiny_qwen3_moe_novels)
  add_test(NAME tokenizer_hf_${_tok}
    COMMAND ${_tok_python} ${CMAKE_CURRENT_LIST_DIR}/compare_hf.py
            --moeopt $<TARGET_FILE:moeopt_cli> --tokenizer ${_tok}
    WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
  set_tests_properties(tokenizer_hf_${_tok} PROPERTIES LABELS tokenizer TIMEOUT 300)
endforeach()
# The committed corpus must be exactly what the generator writes.
add_test(NAME tokenizer_corpus_up_to_date
  COMMAND ${_tok_python} ${CMAKE_CURRENT_LIST_DIR}/make_corpus.py --check
  WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
set_tests_properties(tokenizer_corpus_up_to_date PROPERTIES LABELS tokenizer)
