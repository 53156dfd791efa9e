ALTER TABLE "job_queue"."job_items" DROP CONSTRAINT "job_items_job_id_caption_jobs_job_id_fk";
--> statement-breakpoint
ALTER TABLE "job_queue"."job_items" DROP CONSTRAINT "job_items_image_id_images_id_fk";
--> statement-breakpoint
-- job_items' references to its job and its image, kept by statement-level triggers instead of the
-- two foreign keys dropped above: a foreign key runs one check (and one row lock) per inserted
-- item, which made half the time of a 10,000-item create. The triggers keep what the foreign keys
-- guaranteed: no item names a job or an image that does not exist, deleting a job deletes its
-- items (CASCADE), deleting an image sets its items' image_id to null (SET NULL), and a key that
-- is referenced cannot change.
--
-- Jobs are locked FOR KEY SHARE like a foreign key would (one row per statement, nothing to
-- save). Images are not locked row by row: instead, writers of items hold the advisory lock
-- 7245002 shared, and image deletions take it exclusively first, so an image cannot be deleted
-- between the check below and the end of a transaction that references it, and a deletion sees
-- every item committed before it. Outside READ COMMITTED, where a check cannot see concurrent
-- commits, the images are locked FOR KEY SHARE too (a concurrent delete is then a serialization
-- failure, as with a foreign key).
CREATE FUNCTION "job_queue"."job_items_check_references"() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  missing text;
BEGIN
  PERFORM pg_advisory_xact_lock_shared(7245002);
  SELECT n.job_id::text INTO missing FROM (SELECT DISTINCT job_id FROM new_items) n
  WHERE NOT EXISTS (SELECT 1 FROM job_queue.caption_jobs j WHERE j.job_id = n.job_id FOR KEY SHARE)
  LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'insert or update on table "job_items" violates its reference to caption_jobs'
      USING ERRCODE = 'foreign_key_violation', DETAIL = format('Key (job_id)=(%s) is not present in table "caption_jobs".', missing);
  END IF;
  IF current_setting('transaction_isolation') = 'read committed' THEN
    SELECT n.image_id::text INTO missing FROM (SELECT DISTINCT image_id FROM new_items WHERE image_id IS NOT NULL) n
    WHERE NOT EXISTS (SELECT 1 FROM core_schema.images i WHERE i.id = n.image_id)
    LIMIT 1;
  ELSE
    SELECT n.image_id::text INTO missing FROM (SELECT DISTINCT image_id FROM new_items WHERE image_id IS NOT NULL) n
    WHERE NOT EXISTS (SELECT 1 FROM core_schema.images i WHERE i.id = n.image_id FOR KEY SHARE)
    LIMIT 1;
  END IF;
  IF FOUND THEN
    RAISE EXCEPTION 'insert or update on table "job_items" violates its reference to images'
      USING ERRCODE = 'foreign_key_violation', DETAIL = format('Key (image_id)=(%s) is not present in table "images".', missing);
  END IF;
  RETURN NULL;
END $$;
--> statement-breakpoint
CREATE TRIGGER "job_items_references_insert" AFTER INSERT ON "job_queue"."job_items"
  REFERENCING NEW TABLE AS new_items FOR EACH STATEMENT EXECUTE FUNCTION "job_queue"."job_items_check_references"();
--> statement-breakpoint
-- Keys that change (never, in the service; plain SQL could): one row at a time, only when changed,
-- so the dispatcher's updates (which never set these columns) do not fire it.
CREATE FUNCTION "job_queue"."job_items_check_changed_references"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_advisory_xact_lock_shared(7245002);
  IF NOT EXISTS (SELECT 1 FROM job_queue.caption_jobs j WHERE j.job_id = NEW.job_id FOR KEY SHARE) THEN
    RAISE EXCEPTION 'insert or update on table "job_items" violates its reference to caption_jobs'
      USING ERRCODE = 'foreign_key_violation', DETAIL = format('Key (job_id)=(%s) is not present in table "caption_jobs".', NEW.job_id);
  END IF;
  IF NEW.image_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM core_schema.images i WHERE i.id = NEW.image_id FOR KEY SHARE) THEN
    RAISE EXCEPTION 'insert or update on table "job_items" violates its reference to images'
      USING ERRCODE = 'foreign_key_violation', DETAIL = format('Key (image_id)=(%s) is not present in table "images".', NEW.image_id);
  END IF;
  RETURN NULL;
END $$;
--> statement-breakpoint
CREATE TRIGGER "job_items_references_update" AFTER UPDATE OF job_id, image_id ON "job_queue"."job_items"
  FOR EACH ROW WHEN (NEW.job_id IS DISTINCT FROM OLD.job_id OR (NEW.image_id IS NOT NULL AND NEW.image_id IS DISTINCT FROM OLD.image_id))
  EXECUTE FUNCTION "job_queue"."job_items_check_changed_references"();
--> statement-breakpoint
-- ON DELETE CASCADE from caption_jobs.
CREATE FUNCTION "job_queue"."caption_jobs_delete_items"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM job_queue.job_items i USING old_jobs o WHERE i.job_id = o.job_id;
  RETURN NULL;
END $$;
--> statement-breakpoint
CREATE TRIGGER "caption_jobs_delete_items" AFTER DELETE ON "job_queue"."caption_jobs"
  REFERENCING OLD TABLE AS old_jobs FOR EACH STATEMENT EXECUTE FUNCTION "job_queue"."caption_jobs_delete_items"();
--> statement-breakpoint
-- ON DELETE SET NULL from images, after waiting for the writers of items (the advisory lock).
CREATE FUNCTION "core_schema"."images_lock_for_delete"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_advisory_xact_lock(7245002);
  RETURN NULL;
END $$;
--> statement-breakpoint
CREATE TRIGGER "images_lock_for_delete" BEFORE DELETE ON "core_schema"."images"
  FOR EACH STATEMENT EXECUTE FUNCTION "core_schema"."images_lock_for_delete"();
--> statement-breakpoint
CREATE FUNCTION "core_schema"."images_unlink_items"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE job_queue.job_items i SET image_id = NULL FROM old_images o WHERE i.image_id = o.id;
  RETURN NULL;
END $$;
--> statement-breakpoint
CREATE TRIGGER "images_unlink_items" AFTER DELETE ON "core_schema"."images"
  REFERENCING OLD TABLE AS old_images FOR EACH STATEMENT EXECUTE FUNCTION "core_schema"."images_unlink_items"();
--> statement-breakpoint
-- ON UPDATE NO ACTION: a referenced job id or image id cannot change.
CREATE FUNCTION "job_queue"."refuse_referenced_key_change"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_TABLE_NAME = 'images' THEN
    PERFORM pg_advisory_xact_lock(7245002);
    IF EXISTS (SELECT 1 FROM job_queue.job_items WHERE image_id = OLD.id) THEN
      RAISE EXCEPTION 'update on table "images" violates the reference from job_items'
        USING ERRCODE = 'foreign_key_violation', DETAIL = format('Key (id)=(%s) is still referenced from table "job_items".', OLD.id);
    END IF;
  ELSIF EXISTS (SELECT 1 FROM job_queue.job_items WHERE job_id = OLD.job_id) THEN
    RAISE EXCEPTION 'update on table "caption_jobs" violates the reference from job_items'
      USING ERRCODE = 'foreign_key_violation', DETAIL = format('Key (job_id)=(%s) is still referenced from table "job_items".', OLD.job_id);
  END IF;
  RETURN NULL;
END $$;
--> statement-breakpoint
CREATE TRIGGER "images_refuse_referenced_key_change" AFTER UPDATE OF id ON "core_schema"."images"
  FOR EACH ROW WHEN (NEW.id IS DISTINCT FROM OLD.id) EXECUTE FUNCTION "job_queue"."refuse_referenced_key_change"();
--> statement-breakpoint
CREATE TRIGGER "caption_jobs_refuse_referenced_key_change" AFTER UPDATE OF job_id ON "job_queue"."caption_jobs"
  FOR EACH ROW WHEN (NEW.job_id IS DISTINCT FROM OLD.job_id) EXECUTE FUNCTION "job_queue"."refuse_referenced_key_change"();
--> statement-breakpoint
-- TRUNCATE ... CASCADE follows foreign keys only: take the items along.
CREATE FUNCTION "job_queue"."truncate_job_items"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  TRUNCATE job_queue.job_items;
  RETURN NULL;
END $$;
--> statement-breakpoint
CREATE TRIGGER "caption_jobs_truncate_items" BEFORE TRUNCATE ON "job_queue"."caption_jobs"
  FOR EACH STATEMENT EXECUTE FUNCTION "job_queue"."truncate_job_items"();
--> statement-breakpoint
CREATE TRIGGER "images_truncate_items" BEFORE TRUNCATE ON "core_schema"."images"
  FOR EACH STATEMENT EXECUTE FUNCTION "job_queue"."truncate_job_items"();
