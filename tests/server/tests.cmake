# Server tests (label "server"): the official `openai` Python client against a real
# `moeopt serve` on the embedded tiny model. Needs the project venv (scripts/setup.sh).
set(_server_py ${PROJECT_SOURCE_DIR}/.venv/bin/python)
if(EXISTS ${_server_py})
  add_test(NAME server_openai_client
    COMMAND ${_server_py} ${CMAKE_CURRENT_LIST_DIR}/test_server.py $<TARGET_FILE:moeopt_cli> ${PROJECT_SOURCE_DIR}
    WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
  set_tests_properties(server_openai_client PROPERTIES LABELS "server" TIMEOUT 400 RUN_SERIAL TRUE)
else()
  message(STATUS "tests/server: ${_server_py} missing (run scripts/setup.sh); server tests skipped")
endif()
