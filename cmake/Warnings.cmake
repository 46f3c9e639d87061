# Warning flags and sanitizer switches shared by every moeopt target.
add_library(moeopt_flags INTERFACE)
target_compile_options(moeopt_flags INTERFACE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wno-unused-parameter>)
if(MOEOPT_SANITIZE)
  target_compile_options(moeopt_flags INTERFACE
    $<$<COMPILE_LANGUAGE:CXX>:-fsanitize=address,undefined -fno-omit-frame-pointer>)
  target_link_options(moeopt_flags INTERFACE -fsanitize=address,undefined)
endif()
