-- Conversion reads a stream in (txid, id) order.
CREATE INDEX IF NOT EXISTS {{stream_txid_idx}} ON {{stream}} (txid, id)
