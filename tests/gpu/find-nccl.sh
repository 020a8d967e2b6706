# Sourced by the device scripts: points DSV4_NCCL_LIBRARY at an NCCL 2 library when the loader's
# default search (libnccl.so.2) would not find one — the CUDA toolkit's lib folders, else PyTorch's
# nvidia-nccl wheel.
if [ -z "${DSV4_NCCL_LIBRARY:-}" ] && ! ldconfig -p 2>/dev/null | grep -q 'libnccl.so.2 '; then
  for c in /usr/local/cuda/lib64/libnccl.so.2 /usr/local/cuda/lib/libnccl.so.2 /usr/lib/x86_64-linux-gnu/libnccl.so.2 \
           $(python3 -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib", "libnccl.so.2"))' 2>/dev/null); do
    if [ -f "$c" ]; then export DSV4_NCCL_LIBRARY=$c; break; fi
  done
fi
echo "NCCL library: ${DSV4_NCCL_LIBRARY:-libnccl.so.2 (loader default)}"
