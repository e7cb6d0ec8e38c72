-- The demo's application data: known row counts, so restore tests have something to compare.
CREATE TABLE IF NOT EXISTS accounts (
  id serial PRIMARY KEY,
  owner text NOT NULL,
  balance numeric(14, 2) NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS transactions (
  id serial PRIMARY KEY,
  account_id int REFERENCES accounts (id),
  amount numeric(14, 2),
  at timestamptz DEFAULT now()
);
INSERT INTO accounts (owner, balance)
SELECT 'owner-' || g, g * 10 FROM generate_series(1, 500) g
WHERE NOT EXISTS (SELECT 1 FROM accounts);
INSERT INTO transactions (account_id, amount)
SELECT 1 + g % 500, g FROM generate_series(1, 5000) g
WHERE NOT EXISTS (SELECT 1 FROM transactions);
GRANT SELECT ON ALL TABLES IN SCHEMA public TO stronghold_demo;
GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO stronghold_demo;
-- Restore tests restore into a scratch database and drop it again.
ALTER ROLE stronghold_demo CREATEDB;
