# Python cross-checks (the interpreter is .venv/bin/python from scripts/setup.sh).
#
# safetensors: tests/python/safetensors_crosscheck.py drives the safetensors_tool helper
# (moeopt's reader and writers on the command line) against the official `safetensors`
# package and huggingface_hub's shard splitter, both ways. The helper links only
# moeopt_model so it builds without the other layers.
add_executable(safetensors_tool ${CMAKE_CURRENT_LIST_DIR}/safetensors_tool.cpp)
target_link_libraries(safetensors_tool PRIVATE moeopt_model moeopt_flags)

add_test(NAME python.safetensors_crosscheck
  COMMAND ${PROJECT_SOURCE_DIR}/.venv/bin/python
          ${CMAKE_CURRENT_LIST_DIR}/safetensors_crosscheck.py
          $<TARGET_FILE:safetensors_tool> ${CMAKE_BINARY_DIR}/test_tmp/safetensors_crosscheck
  WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
set_tests_properties(python.safetensors_crosscheck PROPERTIES LABELS "model;python" TIMEOUT 120)
