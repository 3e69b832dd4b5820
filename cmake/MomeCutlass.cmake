# Find CUTLASS headers: MOME_CUTLASS_DIR (the CMake variable, else the environment variable: pip passes no CMake
# variables but MOME_WITH_CUDA / MOME_CUDA_ARCHS, see pyproject.toml), else the PyPI `nvidia-cutlass` wheel
# (cutlass_library/source/include). Sets MOME_CUTLASS_INCLUDE_DIRS and MOME_CUTLASS_VERSION (both empty when not
# found; CUTLASS ops then are not built).
set(MOME_CUTLASS_INCLUDE_DIRS "")
set(MOME_CUTLASS_VERSION "")
set(_root "${MOME_CUTLASS_DIR}")
if(NOT _root AND DEFINED ENV{MOME_CUTLASS_DIR})
  set(_root "$ENV{MOME_CUTLASS_DIR}")
endif()
if(NOT _root)
  execute_process(
    COMMAND "${Python_EXECUTABLE}" -c
      "import cutlass_library, os; print(os.path.join(os.path.dirname(cutlass_library.__file__), 'source'))"
    OUTPUT_VARIABLE _src OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE _rc)
  if(_rc EQUAL 0 AND EXISTS "${_src}/include/cutlass/cutlass.h")
    set(_root "${_src}")
  endif()
endif()
if(_root AND EXISTS "${_root}/include/cutlass/version.h")
  set(MOME_CUTLASS_INCLUDE_DIRS "${_root}/include")
  if(EXISTS "${_root}/tools/util/include")
    list(APPEND MOME_CUTLASS_INCLUDE_DIRS "${_root}/tools/util/include")
  endif()
  file(STRINGS "${_root}/include/cutlass/version.h" _v REGEX "#define CUTLASS_(MAJOR|MINOR|PATCH) [0-9]+")
  string(REGEX REPLACE ".*CUTLASS_MAJOR ([0-9]+).*" "\\1" _maj "${_v}")
  string(REGEX REPLACE ".*CUTLASS_MINOR ([0-9]+).*" "\\1" _min "${_v}")
  string(REGEX REPLACE ".*CUTLASS_PATCH ([0-9]+).*" "\\1" _pat "${_v}")
  set(MOME_CUTLASS_VERSION "${_maj}.${_min}.${_pat}")
  message(STATUS "mome: CUTLASS ${MOME_CUTLASS_VERSION} at ${_root}")
else()
  message(STATUS "mome: CUTLASS not found (pip install --no-deps nvidia-cutlass); grouped_adapter has no CUDA kernel")
endif()
