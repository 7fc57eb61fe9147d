"""Request traces: `kind:key=value,...` specs or trace files -> sorted arrival times (s).

    poisson:rate=R,duration=S
    bursty:base=R,variant=R,cv2=X,duration=S
    timevarying:start=R,end=R,accel=A,cv2=X,duration=S
    maf:mean=R,duration=S,functions=N
    azure-llm:name=code|conv,rate=R,duration=S
    azure-functions:path=FILE,duration=S[,rate=R]      (Azure Functions 2019 per-minute CSV)
    <path to a trace file written by `superserve trace save`>

Every spec takes seed=N (default 0). Imports numpy only.
"""

from superserve.traces.spec import Trace, load_trace, parse_spec, trace_stats

__all__ = ["Trace", "load_trace", "parse_spec", "trace_stats"]
