// The Python module fidfast._C. Importing it loads this library, whose static initialisers
// register the torch.ops.fidfast.* operators; the module itself only reports how it was built.

#include <Python.h>

namespace {

PyObject* cuda_compiled(PyObject*, PyObject*) {
#ifdef FIDFAST_WITH_CUDA
  Py_RETURN_TRUE;
#else
  Py_RETURN_FALSE;
#endif
}

PyMethodDef methods[] = {
    {"cuda_compiled", cuda_compiled, METH_NOARGS, "True if the CUDA kernels were compiled into this build."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "fidfast._C", "Native fidfast ops (torch.ops.fidfast).", -1, methods};

} // namespace

PyMODINIT_FUNC PyInit__C() {
  return PyModule_Create(&module);
}
