# Every third-party package the build uses, found in one place (docs/DEPENDENCIES.md says why
# each one is here).
find_package(Torch REQUIRED)
find_package(MPI REQUIRED COMPONENTS C)
# We use the C API only; Open MPI's mpi.h otherwise drags in the deprecated C++ bindings.
add_compile_definitions(OMPI_SKIP_MPICXX=1 MPICH_SKIP_MPICXX=1)
find_package(yaml-cpp REQUIRED)
find_package(spdlog REQUIRED)
find_package(HDF5 REQUIRED COMPONENTS C)
if(HYDRA_TESTS)
  find_package(GTest REQUIRED)
endif()

# LibTorch puts its ABI flag into TORCH_CXX_FLAGS; everything we compile must agree with it.
set(CMAKE_CXX_FLAGS "${CMAKE_CXX_FLAGS} ${TORCH_CXX_FLAGS}")

if(HYDRA_CUDA)
  find_package(CUDAToolkit REQUIRED)
  # Only one libnccl.so.2 can live in a process, and libtorch_cuda loads the one shipped in
  # the PyTorch environment: link that same file.
  find_package(Python3 REQUIRED COMPONENTS Interpreter)
  execute_process(
    COMMAND ${Python3_EXECUTABLE} -c
      "import os, nvidia.nccl as m; print(os.path.dirname(m.__file__) if m.__file__ else list(m.__path__)[0])"
    OUTPUT_VARIABLE HYDRA_NCCL_ROOT OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _nccl_rc)
  find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${HYDRA_NCCL_ROOT}/include /usr/include REQUIRED)
  find_library(NCCL_LIBRARY NAMES nccl libnccl.so.2 HINTS ${HYDRA_NCCL_ROOT}/lib NO_DEFAULT_PATH)
  if(NOT NCCL_LIBRARY)
    find_library(NCCL_LIBRARY NAMES nccl REQUIRED)
  endif()
  message(STATUS "NCCL: ${NCCL_LIBRARY} (headers ${NCCL_INCLUDE_DIR})")
  add_library(hydra_nccl INTERFACE)
  target_include_directories(hydra_nccl INTERFACE ${NCCL_INCLUDE_DIR})
  target_link_libraries(hydra_nccl INTERFACE ${NCCL_LIBRARY} CUDA::cudart)
endif()

# mpirun flags for the multi-rank tests: CI runs as root on 2 cores.
set(HYDRA_MPIEXEC ${MPIEXEC_EXECUTABLE})
set(HYDRA_MPIEXEC_FLAGS --allow-run-as-root --oversubscribe)
