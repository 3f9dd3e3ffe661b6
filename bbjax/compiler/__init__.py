"""The compiler: named passes from a built Module to a partitioned, passported artifact."""

from bbjax.compiler.compiled import Compiled, load
from bbjax.compiler.compiler import DEFAULT_PASSES, CompileContext, Compiler, Pass
from bbjax.errors import CompileError, CrossClassDataflowError, NotCompiledError, PassportError, UnboundSlotError
from bbjax.compiler.passport import verify_passport

__all__ = ["CompileContext", "CompileError", "Compiled", "Compiler", "CrossClassDataflowError",
           "DEFAULT_PASSES", "NotCompiledError", "Pass", "PassportError", "UnboundSlotError",
           "load", "verify_passport"]
