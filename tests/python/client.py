"""Drives Cathedral's public gRPC API from Python's grpcio, with stubs generated from our
proto files: a client that is not ours. Used by tests/tests/python_client.rs.

usage: client.py ADDR PROTO_DIR OUT_DIR
Prints one JSON line with what it saw; exits non-zero on any mismatch.
"""
import json
import os
import subprocess
import sys

addr, proto_dir, out_dir = sys.argv[1:4]
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
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc  # noqa: E402

channel = grpc.insecure_channel(addr)
jobs = rpc.JobServiceStub(channel)
cluster = rpc.ClusterServiceStub(channel)

spec = pb.JobSpec(name="from-python", command=["echo", "hi"], timeout_ms=7000,
                  env={"A": "1"}, constraints={"zone": "a"})
r = jobs.SubmitJob(pb.SubmitJobRequest(spec=spec))
assert r.job_id > 0, r
job = jobs.GetJob(pb.GetJobRequest(job_id=r.job_id))
assert job.spec.name == "from-python", job
assert list(job.spec.command) == ["echo", "hi"], job
assert job.spec.timeout_ms == 7000, job
assert dict(job.spec.env) == {"A": "1"}, job
assert job.state == pb.JOB_STATE_PENDING, job
listed = jobs.ListJobs(pb.ListJobsRequest(name_prefix="from-py"))
assert [j.id for j in listed.jobs] == [r.job_id], listed

errors = {}
for name, call in [
    ("empty_command", lambda: jobs.SubmitJob(pb.SubmitJobRequest(spec=pb.JobSpec(name="x")))),
    ("unknown_job", lambda: jobs.GetJob(pb.GetJobRequest(job_id=987654321))),
    ("page_size", lambda: jobs.ListJobs(pb.ListJobsRequest(page_size=100000))),
]:
    try:
        call()
        errors[name] = "no error"
    except grpc.RpcError as e:
        errors[name] = [e.code().name, e.details()]
assert errors["empty_command"][0] == "INVALID_ARGUMENT" and "command" in errors["empty_command"][1], errors
assert errors["unknown_job"][0] == "NOT_FOUND", errors
assert errors["page_size"][0] == "INVALID_ARGUMENT" and "LIST_PAGE_SIZE_MAX" in errors["page_size"][1], errors

cancelled = jobs.CancelJob(pb.CancelJobRequest(job_id=r.job_id, reason="python says stop"))
assert cancelled.job.state == pb.JOB_STATE_CANCELLED, cancelled
events = [e for e in jobs.WatchJob(pb.WatchJobRequest(job_id=r.job_id), timeout=10)]
assert events and events[-1].state == pb.JOB_STATE_CANCELLED, events

status = cluster.Status(pb.StatusRequest())
assert status.leader_id == status.node_id and len(status.state_hash) == 64, status

health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
assert health.status == health_pb2.HealthCheckResponse.SERVING, health

refl = reflection_pb2_grpc.ServerReflectionStub(channel)
reply = next(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
services = sorted(s.name for s in reply.list_services_response.service)
assert "cathedral.v1.JobService" in services and "cathedral.v1.ClusterService" in services, services

print(json.dumps({"job_id": r.job_id, "errors": errors, "services": services,
                  "events": len(events), "term": status.term}))
