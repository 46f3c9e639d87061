# `moeopt inspect` of two configs that describe the same model prints the same, apart from
# the paths it was given; used by tests.cmake for the configs transformers 5 writes.
#   -DEXE=<moeopt binary> -DA=<path> -DB=<path> (files or checkpoint directories)
#   -DTMP=<scratch file prefix, for the diff shown on failure>
# For the table and for --json: the output of `inspect A`, with A's path replaced by B's,
# must equal the output of `inspect B` byte for byte.
function(run_inspect path flags var)
  execute_process(COMMAND ${EXE} inspect ${path} ${flags} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0 OR out STREQUAL "")
    message(FATAL_ERROR "moeopt inspect ${path} ${flags}: exit code ${rc}\nstdout: ${out}\nstderr: ${err}")
  endif()
  set(${var} "${out}" PARENT_SCOPE)
endfunction()

foreach(flags "" "--json")
  run_inspect("${A}" "${flags}" out_a)
  run_inspect("${B}" "${flags}" out_b)
  string(REPLACE "${A}" "${B}" out_a "${out_a}")
  if(NOT out_a STREQUAL out_b)
    file(WRITE "${TMP}.a" "${out_a}")
    file(WRITE "${TMP}.b" "${out_b}")
    execute_process(COMMAND diff "${TMP}.a" "${TMP}.b" OUTPUT_VARIABLE d)
    message(FATAL_ERROR "moeopt inspect ${flags}: ${A} and ${B} differ (< first, > second):\n${d}")
  endif()
endforeach()
