"""grpc.health.v1 messages for the client, built at import time in a private descriptor pool.

Debian ships no grpcio-health-checking package, and the build generates Python stubs only for
moeserve.v1. The two messages are declared here from the standard definition; a private pool
keeps them from clashing with a grpc_health package that may be imported beside this one.
"""
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

SERVICE = "grpc.health.v1.Health"
STATUS_NAMES = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


def _build():
    f = descriptor_pb2.FileDescriptorProto(name="moeserve_client/grpc_health_v1.proto", package="grpc.health.v1",
                                           syntax="proto3")
    F = descriptor_pb2.FieldDescriptorProto
    request = f.message_type.add(name="HealthCheckRequest")
    request.field.add(name="service", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    response = f.message_type.add(name="HealthCheckResponse")
    status = response.enum_type.add(name="ServingStatus")
    for number, name in STATUS_NAMES.items():
        status.value.add(name=name, number=number)
    response.field.add(name="status", number=1, type=F.TYPE_ENUM, label=F.LABEL_OPTIONAL,
                       type_name=".grpc.health.v1.HealthCheckResponse.ServingStatus")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    get_class = getattr(message_factory, "GetMessageClass", None)  # protobuf >= 4.22
    if get_class is None:
        get_class = message_factory.MessageFactory(pool).GetPrototype
    return (get_class(pool.FindMessageTypeByName("grpc.health.v1.HealthCheckRequest")),
            get_class(pool.FindMessageTypeByName("grpc.health.v1.HealthCheckResponse")))


HealthCheckRequest, HealthCheckResponse = _build()
