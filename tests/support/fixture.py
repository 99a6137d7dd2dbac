"""Seeds a moto-backed credstash table for kubestash's tests.

Good items come from credstash itself (its library: the same code path as the
CLI); legacy and broken items are written with boto3 the way old credstash
versions and ports wrote them. Run with the .venv python and AWS_ENDPOINT_URL
pointing at moto.

  fixture.py init TABLE [TABLE...]     KMS key alias/credstash + credstash tables
  fixture.py legacy TABLE              items only old credstash versions/ports write
  fixture.py bad TABLE                 a tampered item and one with the wrong context
  fixture.py bulk TABLE COUNT PREFIX   COUNT secrets named PREFIX/sN/KEY (benchmarks)
  fixture.py put-many TABLE PREFIX COUNT   COUNT new versions of PREFIX_i, at once (bursts)
  fixture.py burst TABLE NS SECRETS FIRST COUNT TAG   COUNT puts (one thread each, 8 at a
                                       once) of NS/sJ/K_i, i from FIRST, J = i % SECRETS,
                                       each a new version whose value is "TAG-i"
  fixture.py tamper TABLE NAME         a newer version of NAME whose ciphertext fails its HMAC
  fixture.py enable-stream TABLE [VIEW_TYPE]   a DynamoDB stream (default NEW_IMAGE)
  fixture.py replace-stream TABLE [VIEW_TYPE]  disable the stream, enable a new one (new ARN)
  fixture.py batch TABLE < OPS.json    a JSON list of operations, in order (chaos tests):
      {"op": "put", "name": N, "value": V}        a new version (version 1 for a new name)
      {"op": "delete", "name": N}                 every version of N
      {"op": "tamper", "name": N}                 a new version whose ciphertext fails its HMAC
      {"op": "wrong-context", "name": N, "value": V}  a new version sealed with another context
      {"op": "rollback", "name": N}               delete the newest version of N only
  fixture.py drop-table TABLE          delete the table (and its stream): reads start failing
"""
import base64
import codecs
import json
import sys
from concurrent.futures import ThreadPoolExecutor

import boto3
import credstash


def kms():
    return boto3.client("kms")


def table(name):
    return boto3.resource("dynamodb").Table(name)


def init(tables):
    client = kms()
    aliases = [a["AliasName"] for a in client.list_aliases()["Aliases"]]
    if "alias/credstash" not in aliases:
        key_id = client.create_key(Description="credstash")["KeyMetadata"]["KeyId"]
        try:
            client.create_alias(AliasName="alias/credstash", TargetKeyId=key_id)
        except client.exceptions.AlreadyExistsException:
            pass  # another test process made it first
    for name in tables:
        credstash.createDdbTable(table=name)


def sealed(value, context=None, digest="SHA256"):
    service = credstash.KeyService(kms(), "alias/credstash", context or {})
    return credstash.seal_aes_ctr_legacy(service, value, digest_method=digest)


def put_raw(table_name, name, version, material, **overrides):
    item = {"name": name, "version": version, **material, **overrides}
    item = {k: v for k, v in item.items() if v is not None}
    table(table_name).put_item(Item=item)


def wrap60(text):
    return "\n".join(text[i:i + 60] for i in range(0, len(text), 60))


def legacy(table_name):
    # hmac stored as an (upper-case) String, as credstash < 1.13.1 and ports did.
    m = sealed("hmac stored as a string")
    put_raw(table_name, "legacy/hmac-string/KEY", credstash.paddedInt(1), m,
            hmac=m["hmac"].decode("ascii").upper())
    # No digest attribute: SHA256 by default.
    m = sealed("no digest attribute")
    put_raw(table_name, "legacy/no-digest/KEY", credstash.paddedInt(1), m, digest=None)
    # Base64 wrapped at 60 characters (Ruby ports).
    m = sealed("wrapped base64 " * 10)
    put_raw(table_name, "legacy/wrapped-base64/KEY", credstash.paddedInt(1), m,
            key=wrap60(m["key"]), contents=wrap60(m["contents"]))
    # Padded versions 1..7, then an unpadded "4" that sorts above all of them.
    for version in range(1, 8):
        credstash.putSecret("legacy/unpadded/KEY", "padded %d" % version, version=version, table=table_name)
    put_raw(table_name, "legacy/unpadded/KEY", "4", sealed("unpadded 4 wins"))


def bad(table_name):
    m = sealed("tampered secret value")
    raw = bytearray(base64.b64decode(m["contents"]))
    raw[0] ^= 0x01
    put_raw(table_name, "bad/tampered/KEY", credstash.paddedInt(1), m,
            contents=base64.b64encode(bytes(raw)).decode("ascii"))
    credstash.putSecret("bad/context/KEY", "wrong context secret value", table=table_name,
                        context={"app": "someone-else"})


def bulk(table_name, count, prefix):
    def put(i):
        credstash.putSecret("%s/s%d/KEY_%d" % (prefix, i // 10, i), "value-%d" % i,
                            version=1, table=table_name)
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(put, range(count)))


def enable_stream(table_name, view_type="NEW_IMAGE"):
    boto3.client("dynamodb").update_table(
        TableName=table_name,
        StreamSpecification={"StreamEnabled": True, "StreamViewType": view_type},
    )


def replace_stream(table_name, view_type="NEW_IMAGE"):
    client = boto3.client("dynamodb")
    old = client.describe_table(TableName=table_name)["Table"].get("LatestStreamArn")
    client.update_table(TableName=table_name, StreamSpecification={"StreamEnabled": False})
    enable_stream(table_name, view_type)
    new = client.describe_table(TableName=table_name)["Table"].get("LatestStreamArn")
    if not new or new == old:
        sys.exit("the stream of %s was not replaced (%r -> %r)" % (table_name, old, new))
    print(new)


def put_many(table_name, prefix, count):
    def put(i):
        name = "%s_%d" % (prefix, i)
        version = int(credstash.getHighestVersion(name, table=table_name)) + 1
        credstash.putSecret(name, "burst value %d" % i, version=version, table=table_name)
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(put, range(count)))


def burst(table_name, namespace, secrets, first, count, tag):
    def put(i):
        name = "%s/s%d/K_%d" % (namespace, i % secrets, i)
        version = int(credstash.getHighestVersion(name, table=table_name)) + 1
        credstash.putSecret(name, "%s-%d" % (tag, i), version=version, table=table_name)
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(put, range(first, first + count)))


def tamper(table_name, name):
    version = next_version(table_name, name)
    m = sealed("tampered secret value")
    raw = bytearray(base64.b64decode(m["contents"]))
    raw[0] ^= 0x01
    put_raw(table_name, name, credstash.paddedInt(version), m,
            contents=base64.b64encode(bytes(raw)).decode("ascii"))


def next_version(table_name, name):
    return int(credstash.getHighestVersion(name, table=table_name)) + 1


def batch(table_name, operations):
    for operation in operations:
        op, name = operation["op"], operation["name"]
        if op == "put":
            credstash.putSecretAutoversion(name, operation["value"], table=table_name)
        elif op == "delete":
            credstash.deleteSecrets(name, region=None, table=table_name)
        elif op == "tamper":
            tamper(table_name, name)
        elif op == "wrong-context":
            credstash.putSecretAutoversion(name, operation["value"], table=table_name,
                                           context={"app": "someone-else"})
        elif op == "rollback":
            newest = credstash.getHighestVersion(name, table=table_name)
            if int(newest) > 0:
                boto3.resource("dynamodb").Table(table_name).delete_item(
                    Key={"name": name, "version": credstash.paddedInt(int(newest))})
        else:
            sys.exit("unknown batch operation %r" % op)


def drop_table(table_name):
    boto3.client("dynamodb").delete_table(TableName=table_name)


def main(argv):
    command, args = argv[1], argv[2:]
    if command == "init":
        init(args)
    elif command == "legacy":
        legacy(args[0])
    elif command == "bad":
        bad(args[0])
    elif command == "put-many":
        put_many(args[0], args[1], int(args[2]))
    elif command == "batch":
        batch(args[0], json.load(sys.stdin))
    elif command == "burst":
        burst(args[0], args[1], int(args[2]), int(args[3]), int(args[4]), args[5])
    elif command == "tamper":
        tamper(args[0], args[1])
    elif command == "bulk":
        bulk(args[0], int(args[1]), args[2])
    elif command == "enable-stream":
        enable_stream(*args[:2])
    elif command == "replace-stream":
        replace_stream(*args[:2])
    elif command == "drop-table":
        drop_table(args[0])
    else:
        sys.exit("unknown command %r" % command)


if __name__ == "__main__":
    main(sys.argv)
