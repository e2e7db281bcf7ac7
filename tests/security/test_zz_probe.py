def test_probe(client):
    bad = []
    for depth in range(900, 1000, 3):
        body = '{"a":' * depth + "1" + "}" * depth
        r = client.post("/api/v1/tokens", data=body, content_type="application/json")
        if r.status_code >= 500:
            bad.append(depth)
    for depth in range(900, 1000, 3):
        body = '{"a":' + "[" * depth + "]" * depth + "}"
        r = client.post("/api/v1/tokens", data=body, content_type="application/json")
        if r.status_code >= 500:
            bad.append(depth)
    print("BAD", bad)
