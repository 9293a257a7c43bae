"""What the tests share: reference samples, peers written from published protocols, harnesses."""
