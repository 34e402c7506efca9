-- Order-system keys: an operator issues one per merchant for its order system (POST /v1/orders only).
ALTER TABLE api_keys DROP CONSTRAINT api_keys_role_check;
ALTER TABLE api_keys DROP CONSTRAINT api_keys_check;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_role_check CHECK (role IN ('operator', 'merchant', 'order_system'));
ALTER TABLE api_keys ADD CONSTRAINT api_keys_merchant_check CHECK ((role = 'operator') = (merchant_id IS NULL));
