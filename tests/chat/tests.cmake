# Chat-template CLI tests (included by tests/CMakeLists.txt). The library-level checks
# (interpreter vs jinja2, renderings vs transformers' goldens) are gtests in test_tokenizer;
# this runs the same golden cases through `moeopt chat-template`. Needs only python3.
find_program(MOEOPT_PYTHON3 python3)
if(MOEOPT_PYTHON3)
  add_test(NAME chat_template_cli
    COMMAND ${MOEOPT_PYTHON3} ${CMAKE_CURRENT_LIST_DIR}/check_cli.py $<TARGET_FILE:moeopt_cli>
    WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
  set_tests_properties(chat_template_cli PROPERTIES LABELS "tokenizer;cli" TIMEOUT 300)
endif()
