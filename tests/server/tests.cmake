# Server tests (label "server"): the official `openai` Python client against a real
# `moeopt serve` on the embedded tiny model. Needs the project venv (scripts/setup.sh).
set(_server_py ${PROJECT_SOURCE_DIR}/.venv/bin/python)
if(EXISTS ${_server_py})
  add_test(NAME server_openai_client
    COMMAND ${_server_py} ${CMAKE_CURRENT_LIST_DIR}/test_server.py $<TARGET_FILE:moeopt_cli> ${PROJECT_SOURCE_DIR}
    WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
  set_tests_properties(server_openai_client PROPERTIES LABELS "server" TIMEOUT 400 RUN_SERIAL TRUE)
  # Hostile clients (issue 19): deep JSON, framing, header limits, slow clients, memory bounds.
  add_test(NAME server_hardening
    COMMAND ${_server_py} ${CMAKE_CURRENT_LIST_DIR}/test_hardening.py $<TARGET_FILE:moeopt_cli> ${PROJECT_SOURCE_DIR}
    WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
  set_tests_properties(server_hardening PROPERTIES LABELS "server" TIMEOUT 400 RUN_SERIAL TRUE)
else()
  message(STATUS "tests/server: ${_server_py} missing (run scripts/setup.sh); server tests skipped")
endif()

# Flag errors of `serve` and `bench serve`: exit 2 with one line naming the flag.
set(_server_cli_runner ${PROJECT_SOURCE_DIR}/tests/cli/run_cli.cmake)
function(moeopt_server_cli_test name args rc stderr_re)
  add_test(NAME cli_${name} COMMAND ${CMAKE_COMMAND} -DEXE=$<TARGET_FILE:moeopt_cli> "-DARGS=${args}"
    -DEXPECT_RC=${rc} "-DEXPECT_STDERR=${stderr_re}" -P ${_server_cli_runner})
  set_tests_properties(cli_${name} PROPERTIES LABELS "server;cli" ENVIRONMENT MOEOPT_HOME=${PROJECT_SOURCE_DIR})
endfunction()
moeopt_server_cli_test(serve_bad_knob "serve|--max-num-seqs|0" 2
  "^moeopt serve: error: --max-num-seqs: override engine.max_num_seqs: 0 is out of range")
moeopt_server_cli_test(serve_bad_feature "serve|--fp8-weights|maybe" 2
  "^moeopt serve: error: --fp8-weights: [^\n]*expected a boolean")
moeopt_server_cli_test(serve_unknown_profile "serve|--profile|nope" 2 "^moeopt serve: error: unknown profile 'nope'")
moeopt_server_cli_test(serve_bad_port "serve|--port|70000" 2 "^moeopt serve: error: --port must be in")
moeopt_server_cli_test(bench_serve_bad_url "bench|serve|--url|ftp://x" 2
  "^moeopt bench serve: error: --url must look like http://HOST:PORT")
moeopt_server_cli_test(bench_serve_unreachable "bench|serve|--url|http://127.0.0.1:1|--no-progress" 2
  "^moeopt bench serve: error: GET http://127.0.0.1:1/v1/models: ")

# Offline engine benchmark: runs and reports tokens/s as JSON.
add_test(NAME cli_bench_offline_json COMMAND ${CMAKE_COMMAND} -DEXE=$<TARGET_FILE:moeopt_cli>
  "-DARGS=bench|--batch-size|2|--input-len|4|--output-len|3|--threads|2|--json" -DEXPECT_RC=0
  "-DEXPECT_STDOUT=\"output_tokens_per_s\": [0-9.e+]+" -P ${_server_cli_runner})
set_tests_properties(cli_bench_offline_json PROPERTIES LABELS "server;cli" ENVIRONMENT MOEOPT_HOME=${PROJECT_SOURCE_DIR})
