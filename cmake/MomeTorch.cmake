# Locate the torch we are building against (the one in the running Python), and decide whether to build CUDA.
# Sets: TORCH_LIBRARIES, Torch_VERSION, MOME_CUDA_ENABLED, MOME_TORCH_CUDA_VERSION.
execute_process(
  COMMAND "${Python_EXECUTABLE}" -c
    "import torch, torch.utils; print(torch.utils.cmake_prefix_path); print(torch.version.cuda or ''); print(torch.__file__)"
  OUTPUT_VARIABLE _torch_info OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _torch_rc)
if(NOT _torch_rc EQUAL 0)
  message(FATAL_ERROR "mome: `import torch` failed in ${Python_EXECUTABLE}. Install torch first and build with "
                      "`pip install --no-build-isolation .` so the build sees it.")
endif()
string(REPLACE "\n" ";" _torch_info "${_torch_info}")
list(GET _torch_info 0 _torch_prefix)
list(GET _torch_info 1 MOME_TORCH_CUDA_VERSION)
list(GET _torch_info 2 _torch_file)
get_filename_component(_torch_dir "${_torch_file}" DIRECTORY)
# Prepend, so a second torch elsewhere on CMAKE_PREFIX_PATH cannot contribute its config files.
list(PREPEND CMAKE_PREFIX_PATH "${_torch_prefix}")

set(MOME_CUDA_ENABLED OFF)
if(MOME_WITH_CUDA STREQUAL "ON" OR MOME_WITH_CUDA STREQUAL "AUTO")
  if(MOME_TORCH_CUDA_VERSION STREQUAL "")
    if(MOME_WITH_CUDA STREQUAL "ON")
      message(FATAL_ERROR "mome: MOME_WITH_CUDA=ON but the torch in ${_torch_dir} is a CPU build")
    endif()
  else()
    find_program(_nvcc nvcc HINTS "$ENV{CUDA_HOME}/bin" "$ENV{CUDA_PATH}/bin" /usr/local/cuda/bin)
    if(_nvcc)
      set(MOME_CUDA_ENABLED ON)
    elseif(MOME_WITH_CUDA STREQUAL "ON")
      message(FATAL_ERROR "mome: MOME_WITH_CUDA=ON but nvcc was not found (put it on PATH or set CUDA_HOME)")
    endif()
  endif()
endif()

if(MOME_CUDA_ENABLED)
  get_filename_component(_cuda_root "${_nvcc}" DIRECTORY)
  get_filename_component(_cuda_root "${_cuda_root}" DIRECTORY)
  set(CUDA_TOOLKIT_ROOT_DIR "${_cuda_root}" CACHE PATH "" FORCE)
  set(CMAKE_CUDA_COMPILER "${_nvcc}")
  set(CMAKE_CUDA_STANDARD 20)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  enable_language(CUDA)
  # PTX of the newest listed architecture rides along (`+PTX`), so a GPU newer than all of them JIT-compiles it at
  # load instead of failing with "no kernel image is available". Not added when the list already names PTX.
  if(NOT MOME_CUDA_ARCHS MATCHES "PTX")
    set(_archs ${MOME_CUDA_ARCHS})
    list(SORT _archs COMPARE NATURAL)
    list(POP_BACK _archs _newest)
    list(APPEND _archs "${_newest}+PTX")
    set(MOME_CUDA_ARCHS "${_archs}")  # shadows the cache entry; build_info reports this list
  endif()
  set(ENV{TORCH_CUDA_ARCH_LIST} "${MOME_CUDA_ARCHS}")
  set(TORCH_CUDA_ARCH_LIST "${MOME_CUDA_ARCHS}")
  # A minimal toolkit has no nvrtc; the CUDA torch wheel ships one (nvidia/cu13/lib or nvidia/cuda_nvrtc/lib).
  find_library(CUDA_nvrtc_LIBRARY NAMES nvrtc libnvrtc.so.13 libnvrtc.so.12
    HINTS "${_cuda_root}/lib64" "${_torch_dir}/../nvidia/cu13/lib" "${_torch_dir}/../nvidia/cuda_nvrtc/lib")
endif()

find_package(Torch REQUIRED)
message(STATUS "mome: torch ${Torch_VERSION} (CUDA ${MOME_TORCH_CUDA_VERSION}), build CUDA: ${MOME_CUDA_ENABLED}")
