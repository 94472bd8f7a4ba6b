"""Python's grpcio against a Cathedral cluster with TLS and access control on. Used by
tests/tests/security.rs.

usage: secure_client.py ADDR PROTO_DIR OUT_DIR CA_PEM SUBMIT_SECRET READ_SECRET
Prints one JSON line: the status code each call got.
"""
import json
import os
import subprocess
import sys

addr, proto_dir, out_dir, ca_pem, submit_secret, read_secret = sys.argv[1:7]
os.makedirs(out_dir, exist_ok=True)
subprocess.run(
    [sys.executable, "-m", "grpc_tools.protoc", "-I", proto_dir,
     "--python_out", out_dir, "--grpc_python_out", out_dir,
     "cathedral/v1/cathedral.proto"],
    check=True,
)
sys.path.insert(0, out_dir)

import grpc  # noqa: E402
from cathedral.v1 import cathedral_pb2 as pb  # noqa: E402
from cathedral.v1 import cathedral_pb2_grpc as rpc  # noqa: E402

with open(ca_pem, "rb") as f:
    creds = grpc.ssl_channel_credentials(root_certificates=f.read())
secure = grpc.secure_channel(addr, creds)
spec = pb.JobSpec(name="python-secure", command=["true"], timeout_ms=7000)


def code(call, metadata=None, channel=secure):
    try:
        r = call(rpc.JobServiceStub(channel), metadata)
        return ["OK", getattr(r, "job_id", 0)]
    except grpc.RpcError as e:
        return [e.code().name, e.details()]


submit = lambda stub, md: stub.SubmitJob(pb.SubmitJobRequest(spec=spec), metadata=md, timeout=10)
seen = {
    "with_token": code(submit, [("authorization", "Bearer " + submit_secret)]),
    "without_token": code(submit),
    "bad_token": code(submit, [("authorization", "Bearer nope")]),
    "read_token_submits": code(submit, [("authorization", "Bearer " + read_secret)]),
    "plaintext": code(submit, [("authorization", "Bearer " + submit_secret)],
                      grpc.insecure_channel(addr)),
}
print(json.dumps(seen))
