-- One step of an idempotent HTTP request's record (sparked_credits.integrations).
--
-- KEYS: 1 the record hash, request:{<account>}:<scope>:<key digest>
-- ARGV: 1 step ('begin', 'finish', 'fail'), 2 request fingerprint (digest of the body),
--       3 attempt token (unique per attempt), 4 record retention (ms), then per step:
--       begin:  5 lease (ms)
--       finish: 5 status, 6 content type, 7 body
--       fail:   5 'forget' (delete: nothing was charged) | 'next' (the next attempt gets a
--               new charge key) | 'same' (it replays the same charges)
--
-- Replies: {'started', attempt} | {'conflict'} | {'running', retry_after_ms}
--        | {'done', status, content type, body} | {'stored'} | {'failed'} | {'lost'}
--
-- Only locals; one key; server time (TIME) for the lease, never the client's clock.
if redis.replicate_commands then redis.replicate_commands() end

local KEY = KEYS[1]
local STEP, FP, TOKEN, TTL = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])

local NOW
do
  local t = redis.call('TIME')
  NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local rec = redis.call('HMGET', KEY, 'state', 'fp', 'token', 'attempt', 'lease_until',
                       'status', 'ctype', 'body')
local state, fp, token, attempt = rec[1], rec[2], rec[3], rec[4]
local lease_until = tonumber(rec[5] or '0') or 0

if STEP == 'begin' then
  local lease = tonumber(ARGV[5])
  if not state then
    redis.call('HSET', KEY, 'state', 'running', 'fp', FP, 'token', TOKEN, 'attempt', '1',
               'lease_until', string.format('%d', NOW + lease))
    redis.call('PEXPIRE', KEY, TTL)
    return {'started', '1'}
  end
  if fp ~= FP then
    return {'conflict'}
  end
  if state == 'done' then
    return {'done', rec[6], rec[7], rec[8]}
  end
  if state == 'running' and token == TOKEN then
    return {'started', attempt}  -- this very attempt, its begin re-sent after a lost reply
  end
  if state == 'running' and NOW < lease_until then
    return {'running', string.format('%d', lease_until - NOW)}
  end
  -- A failed attempt that may be retried, or a running one whose process is gone (its
  -- lease ran out): this attempt takes over, with the same attempt number (so the same
  -- charge keys: what the lost attempt charged replays instead of charging again).
  redis.call('HSET', KEY, 'state', 'running', 'token', TOKEN,
             'lease_until', string.format('%d', NOW + lease))
  redis.call('PEXPIRE', KEY, TTL)
  return {'started', attempt}
end

if STEP == 'finish' and state == 'done' and fp == FP then
  return {'stored'}  -- a re-sent finish
end
if state ~= 'running' or token ~= TOKEN or fp ~= FP then
  return {'lost'}  -- another attempt took over (this one outlived its lease)
end

if STEP == 'finish' then
  redis.call('HSET', KEY, 'state', 'done', 'status', ARGV[5], 'ctype', ARGV[6], 'body', ARGV[7])
  redis.call('HDEL', KEY, 'token', 'lease_until')
  redis.call('PEXPIRE', KEY, TTL)
  return {'stored'}
end

if STEP == 'fail' then
  local how = ARGV[5]
  if how == 'forget' then
    redis.call('DEL', KEY)
  else
    local next_attempt = tonumber(attempt)
    if how == 'next' then next_attempt = next_attempt + 1 end
    redis.call('HSET', KEY, 'state', 'failed', 'attempt', string.format('%d', next_attempt))
    redis.call('HDEL', KEY, 'token', 'lease_until')
    redis.call('PEXPIRE', KEY, TTL)
  end
  return {'failed'}
end

return redis.error_reply('ERR unknown request_record step')
